// Package random is MAC's pulumi-resource-random: RandomPassword, schema-compatible with
// pulumi-random 4.21.4 (length, character classes, minimums, overrideSpecial, keepers; result
// and bcryptHash are secrets). Every input change replaces the password, as upstream.
package random

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"golang.org/x/crypto/bcrypt"

	"mac.local/providers/internal/pkit"
	"mac.local/providers/schemas"
)

// Version is what the pulumi_random Python SDK asks for.
const Version = "4.21.4"

const (
	passwordType = "random:index/randomPassword:RandomPassword"
	// The special characters upstream uses when overrideSpecial is not set.
	defaultSpecial = "!@#$%&*()-_=+[]{}<>:?"
	lowerChars     = "abcdefghijklmnopqrstuvwxyz"
	upperChars     = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	numericChars   = "0123456789"
)

var passwordInputs = []string{"length", "lower", "upper", "numeric", "number", "special",
	"minLower", "minUpper", "minNumeric", "minSpecial", "overrideSpecial", "keepers"}

// Provider implements plugin.Provider for RandomPassword.
type Provider struct {
	pkit.Plugin
}

// New returns the provider.
func New() *Provider { return &Provider{pkit.NewPlugin("random", Version, schemas.Random)} }

func (p *Provider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	if req.Type != passwordType {
		return plugin.CheckResponse{}, fmt.Errorf("%s: resource type %s is not implemented by MAC's random provider (only RandomPassword)", req.Name, req.Type)
	}
	news := pkit.WithDefaults(req.News, resource.PropertyMap{
		"lower": resource.NewBoolProperty(true), "upper": resource.NewBoolProperty(true),
		"numeric": resource.NewBoolProperty(true), "number": resource.NewBoolProperty(true),
		"special":  resource.NewBoolProperty(true),
		"minLower": resource.NewNumberProperty(0), "minUpper": resource.NewNumberProperty(0),
		"minNumeric": resource.NewNumberProperty(0), "minSpecial": resource.NewNumberProperty(0),
	})
	failures := pkit.Unsupported("random", passwordType, req.News, passwordInputs...)
	if !pkit.AnyUnknown(news) {
		if _, err := optionsOf(news); err != nil {
			failures = append(failures, plugin.CheckFailure{Property: "length", Reason: err.Error()})
		}
	}
	return plugin.CheckResponse{Properties: news, Failures: failures}, nil
}

func (p *Provider) Diff(_ context.Context, req plugin.DiffRequest) (plugin.DiffResponse, error) {
	olds := pkit.OldInputs(req.OldInputs, req.OldOutputs, passwordInputs...)
	return pkit.Diff(olds, req.NewInputs, pkit.ReplaceAll, false), nil
}

func (p *Provider) Create(_ context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	outs := req.Properties.Copy()
	if req.Preview {
		outs["result"] = resource.MakeComputed(resource.NewStringProperty(""))
		outs["bcryptHash"] = resource.MakeComputed(resource.NewStringProperty(""))
		return plugin.CreateResponse{Properties: outs}, nil
	}
	opts, err := optionsOf(req.Properties)
	if err != nil {
		return plugin.CreateResponse{}, pkit.Fail(req.Name, "create", err)
	}
	password, err := Generate(opts)
	if err != nil {
		return plugin.CreateResponse{}, pkit.Fail(req.Name, "create", err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return plugin.CreateResponse{}, pkit.Fail(req.Name, "bcrypt", err)
	}
	outs["result"] = resource.MakeSecret(resource.NewStringProperty(password))
	outs["bcryptHash"] = resource.MakeSecret(resource.NewStringProperty(string(hash)))
	return plugin.CreateResponse{ID: "none", Properties: outs}, nil
}

// Read: a password exists only in the state, so reality is what the state says.
func (p *Provider) Read(_ context.Context, req plugin.ReadRequest) (plugin.ReadResponse, error) {
	return pkit.ReadState(req, passwordInputs...), nil
}

func (p *Provider) Update(context.Context, plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	return plugin.UpdateResponse{}, fmt.Errorf("RandomPassword is never updated in place: every change replaces it")
}

func (p *Provider) Delete(context.Context, plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	return plugin.DeleteResponse{}, nil
}

// Options are the generation settings of one password.
type Options struct {
	Length                                     int
	Lower, Upper, Numeric, Special             bool
	MinLower, MinUpper, MinNumeric, MinSpecial int
	SpecialChars                               string
}

func optionsOf(m resource.PropertyMap) (Options, error) {
	length, ok := pkit.Int(m, "length")
	if !ok {
		return Options{}, fmt.Errorf("length is required")
	}
	o := Options{
		Length:       int(length),
		Lower:        pkit.Bool(m, "lower", true),
		Upper:        pkit.Bool(m, "upper", true),
		Numeric:      pkit.Bool(m, "numeric", true) && pkit.Bool(m, "number", true),
		Special:      pkit.Bool(m, "special", true),
		MinLower:     int(pkit.IntOr(m, "minLower", 0)),
		MinUpper:     int(pkit.IntOr(m, "minUpper", 0)),
		MinNumeric:   int(pkit.IntOr(m, "minNumeric", 0)),
		MinSpecial:   int(pkit.IntOr(m, "minSpecial", 0)),
		SpecialChars: pkit.StringOr(m, "overrideSpecial", defaultSpecial),
	}
	return o, o.validate()
}

func (o Options) validate() error {
	if o.Length < 1 {
		return fmt.Errorf("length must be at least 1, got %d", o.Length)
	}
	if o.MinLower < 0 || o.MinUpper < 0 || o.MinNumeric < 0 || o.MinSpecial < 0 {
		return fmt.Errorf("minimums must not be negative")
	}
	if sum := o.MinLower + o.MinUpper + o.MinNumeric + o.MinSpecial; sum > o.Length {
		return fmt.Errorf("length %d is less than the sum of the minimums (%d)", o.Length, sum)
	}
	if o.charset() == "" {
		return fmt.Errorf("every character class is disabled: nothing to generate from")
	}
	if o.Special && o.SpecialChars == "" && o.MinSpecial > 0 {
		return fmt.Errorf("minSpecial %d with an empty overrideSpecial", o.MinSpecial)
	}
	return nil
}

func (o Options) charset() string {
	s := ""
	if o.Lower {
		s += lowerChars
	}
	if o.Upper {
		s += upperChars
	}
	if o.Numeric {
		s += numericChars
	}
	if o.Special {
		s += o.SpecialChars
	}
	return s
}

// Generate draws a password from crypto/rand: the minimum of each class first, the rest from all
// enabled classes, then a shuffle.
func Generate(o Options) (string, error) {
	if err := o.validate(); err != nil {
		return "", err
	}
	var out []byte
	for _, class := range []struct {
		on    bool
		min   int
		chars string
	}{{o.Lower, o.MinLower, lowerChars}, {o.Upper, o.MinUpper, upperChars},
		{o.Numeric, o.MinNumeric, numericChars}, {o.Special, o.MinSpecial, o.SpecialChars}} {
		if !class.on {
			continue
		}
		for range class.min {
			c, err := pick(class.chars)
			if err != nil {
				return "", err
			}
			out = append(out, c)
		}
	}
	all := o.charset()
	for len(out) < o.Length {
		c, err := pick(all)
		if err != nil {
			return "", err
		}
		out = append(out, c)
	}
	for i := len(out) - 1; i > 0; i-- {
		j, err := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		if err != nil {
			return "", err
		}
		out[i], out[j.Int64()] = out[j.Int64()], out[i]
	}
	return string(out), nil
}

func pick(chars string) (byte, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(len(chars))))
	if err != nil {
		return 0, err
	}
	return chars[n.Int64()], nil
}
