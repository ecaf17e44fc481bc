package random

import (
	"context"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"golang.org/x/crypto/bcrypt"
)

func TestGenerateHonoursClassesAndMinimums(t *testing.T) {
	o := Options{Length: 40, Lower: true, Upper: true, Numeric: true, Special: false,
		MinLower: 5, MinUpper: 5, MinNumeric: 10}
	for range 50 {
		pw, err := Generate(o)
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != 40 {
			t.Fatalf("length %d", len(pw))
		}
		var lo, up, num int
		for _, c := range pw {
			switch {
			case strings.ContainsRune(lowerChars, c):
				lo++
			case strings.ContainsRune(upperChars, c):
				up++
			case strings.ContainsRune(numericChars, c):
				num++
			default:
				t.Fatalf("special character %q although special=false", c)
			}
		}
		if lo < 5 || up < 5 || num < 10 {
			t.Fatalf("minimums not met in %q", pw)
		}
	}
}

func TestGenerateRejectsImpossibleSettings(t *testing.T) {
	for _, o := range []Options{
		{Length: 0, Lower: true},
		{Length: 3, Lower: true, MinLower: 2, MinUpper: 2, Upper: true},
		{Length: 8},
	} {
		if _, err := Generate(o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestCheckNamesUnsupportedInputsAndFillsDefaults(t *testing.T) {
	p := New()
	resp, err := p.Check(context.Background(), plugin.CheckRequest{
		Name: "pw", Type: passwordType,
		News: resource.PropertyMap{"length": resource.NewNumberProperty(12), "colour": resource.NewStringProperty("red")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Failures) != 1 || resp.Failures[0].Property != "colour" || !strings.Contains(resp.Failures[0].Reason, "colour") {
		t.Fatalf("failures %+v", resp.Failures)
	}
	if !resp.Properties["special"].BoolValue() {
		t.Fatal("special default not filled in")
	}
	resp, _ = p.Check(context.Background(), plugin.CheckRequest{Name: "pw", Type: passwordType,
		News: resource.PropertyMap{"length": resource.NewNumberProperty(0)}})
	if len(resp.Failures) != 1 || resp.Failures[0].Property != "length" {
		t.Fatalf("length 0 accepted: %+v", resp.Failures)
	}
}

func TestCreateOutputsSecretsAndPreviewUnknowns(t *testing.T) {
	p := New()
	ins := resource.PropertyMap{"length": resource.NewNumberProperty(20), "special": resource.NewBoolProperty(false)}
	prev, err := p.Create(context.Background(), plugin.CreateRequest{Name: "pw", Type: passwordType, Properties: ins, Preview: true})
	if err != nil || !prev.Properties["result"].IsComputed() {
		t.Fatalf("preview: %v %v", err, prev.Properties)
	}
	got, err := p.Create(context.Background(), plugin.CreateRequest{Name: "pw", Type: passwordType, Properties: ins})
	if err != nil {
		t.Fatal(err)
	}
	result, hash := got.Properties["result"], got.Properties["bcryptHash"]
	if !result.IsSecret() || !hash.IsSecret() {
		t.Fatal("result and bcryptHash must be secret")
	}
	pw := result.SecretValue().Element.StringValue()
	if len(pw) != 20 || bcrypt.CompareHashAndPassword([]byte(hash.SecretValue().Element.StringValue()), []byte(pw)) != nil {
		t.Fatalf("bad password or hash")
	}
}

func TestEveryChangeReplaces(t *testing.T) {
	p := New()
	olds := resource.PropertyMap{"length": resource.NewNumberProperty(20)}
	same, _ := p.Diff(context.Background(), plugin.DiffRequest{OldInputs: olds, NewInputs: olds})
	if same.Changes != plugin.DiffNone {
		t.Fatal("no-op diff reported changes")
	}
	d, _ := p.Diff(context.Background(), plugin.DiffRequest{OldInputs: olds,
		NewInputs: resource.PropertyMap{"length": resource.NewNumberProperty(21)}})
	if d.Changes != plugin.DiffSome || len(d.ReplaceKeys) != 1 {
		t.Fatalf("diff %+v", d)
	}
	unknown, _ := p.Diff(context.Background(), plugin.DiffRequest{OldInputs: olds,
		NewInputs: resource.PropertyMap{"length": resource.MakeComputed(resource.NewNumberProperty(0))}})
	if unknown.Changes != plugin.DiffSome || len(unknown.ReplaceKeys) != 1 {
		t.Fatalf("unknown length must show a possible replacement: %+v", unknown)
	}
}
