// Package libvirt is MAC's pulumi-resource-libvirt: Pool (dir), Volume (upload from source,
// copy-on-write over baseVolumeId, size, format), CloudInitDisk (a NoCloud ISO uploaded into a
// pool) and Domain, schema-compatible with pulumi-libvirt 0.5.4 for the inputs MAC uses; Check
// refuses every other input by name. Replace-or-update follows terraform-provider-libvirt 0.8.1's
// ForceNew flags. The connection is lazy: Configure records the URI, the first operation that
// needs the host dials it (so a preview that changes nothing on a host never contacts it).
package libvirt

import (
	"context"
	"fmt"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"

	"mac.local/providers/internal/pkit"
	"mac.local/providers/schemas"
)

// Version is what the pulumi_libvirt Python SDK asks for.
const Version = "0.5.4"

const (
	poolType      = "libvirt:index/pool:Pool"
	volumeType    = "libvirt:index/volume:Volume"
	cloudInitType = "libvirt:index/cloudInitDisk:CloudInitDisk"
	domainType    = "libvirt:index/domain:Domain"

	defaultTimeout = 20 * time.Minute
)

// kind is one resource type: its inputs, replace rule and CRUD.
type kind interface {
	inputs() []string
	check(name string, news resource.PropertyMap) []plugin.CheckFailure
	replaces(key string) bool
	create(ctx context.Context, c *Conn, name string, ins resource.PropertyMap) (string, resource.PropertyMap, error)
	// read returns nil outputs when the object is gone.
	read(ctx context.Context, c *Conn, id string, ins, state resource.PropertyMap) (resource.PropertyMap, error)
	update(ctx context.Context, c *Conn, id string, olds, news, oldOuts resource.PropertyMap) (resource.PropertyMap, error)
	remove(ctx context.Context, c *Conn, id string, outs resource.PropertyMap) error
	// computed lists the outputs that are unknown in a preview of a create.
	computed() []string
}

// drifter is a kind whose Read can tell which inputs no longer hold on the host.
type drifter interface {
	drift(inputs, outs resource.PropertyMap) resource.PropertyMap
}

var kinds = map[string]kind{
	poolType:      poolKind{},
	volumeType:    volumeKind{},
	cloudInitType: cloudInitKind{},
	domainType:    domainKind{},
}

// Provider implements plugin.Provider for libvirt.
type Provider struct {
	pkit.Plugin
	uri   string
	conns *Conns
}

// New returns an unconfigured provider.
func New() *Provider {
	return &Provider{Plugin: pkit.NewPlugin("libvirt", Version, schemas.Libvirt), conns: NewConns()}
}

func (p *Provider) CheckConfig(_ context.Context, req plugin.CheckConfigRequest) (plugin.CheckConfigResponse, error) {
	failures := pkit.Unsupported("libvirt", "pulumi:providers:libvirt", req.News, "uri", "version")
	if !pkit.Unknown(req.News, "uri") {
		if uri, ok := pkit.String(req.News, "uri"); !ok || uri == "" {
			failures = append(failures, plugin.CheckFailure{Property: "uri", Reason: "uri is required (e.g. qemu:///system, qemu+ssh://root@HOST[:PORT]/system)"})
		} else if _, err := ParseURI(uri); err != nil {
			failures = append(failures, plugin.CheckFailure{Property: "uri", Reason: err.Error()})
		}
	}
	return plugin.CheckConfigResponse{Properties: req.News, Failures: failures}, nil
}

// DiffConfig: a new URI points the provider elsewhere; upstream updates it in place.
func (p *Provider) DiffConfig(_ context.Context, req plugin.DiffConfigRequest) (plugin.DiffConfigResponse, error) {
	olds := pkit.OldInputs(req.OldInputs, req.OldOutputs, "uri")
	news := req.NewInputs.Copy()
	delete(news, "version")
	olds = olds.Copy()
	delete(olds, "version")
	return pkit.Diff(olds, news, func(string) bool { return false }, false), nil
}

// Configure records the URI and never dials.
func (p *Provider) Configure(_ context.Context, req plugin.ConfigureRequest) (plugin.ConfigureResponse, error) {
	p.uri, _ = pkit.String(req.Inputs, "uri")
	return plugin.ConfigureResponse{}, nil
}

func (p *Provider) Close() error {
	p.conns.Close()
	return nil
}

func kindOf(name string, typ string) (kind, error) {
	k, ok := kinds[typ]
	if !ok {
		return nil, fmt.Errorf("%s: resource type %s is not implemented by MAC's libvirt provider (Pool, Volume, CloudInitDisk, Domain are)", name, typ)
	}
	return k, nil
}

func (p *Provider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	k, err := kindOf(req.Name, string(req.Type))
	if err != nil {
		return plugin.CheckResponse{}, err
	}
	failures := pkit.Unsupported("libvirt", string(req.Type), req.News, k.inputs()...)
	failures = append(failures, k.check(req.Name, req.News)...)
	return plugin.CheckResponse{Properties: req.News, Failures: failures}, nil
}

func (p *Provider) Diff(_ context.Context, req plugin.DiffRequest) (plugin.DiffResponse, error) {
	k, err := kindOf(req.Name, string(req.Type))
	if err != nil {
		return plugin.DiffResponse{}, err
	}
	olds := pkit.OldInputs(req.OldInputs, req.OldOutputs, k.inputs()...)
	// A libvirt object's name is unique on its host: a replacement that keeps the name must
	// delete the old object first.
	oldName, _ := pkit.String(olds, "name")
	newName, known := pkit.String(req.NewInputs, "name")
	sameName := known && oldName == newName
	return pkit.Diff(olds, req.NewInputs, k.replaces, sameName), nil
}

func (p *Provider) op(ctx context.Context, timeout float64) (context.Context, context.CancelFunc) {
	ctx, stop := p.Cancel.Join(ctx)
	tctx, cancel := pkit.Timeout(ctx, timeout, defaultTimeout)
	return tctx, func() { cancel(); stop() }
}

func (p *Provider) conn(ctx context.Context) (*Conn, error) {
	if p.uri == "" {
		return nil, fmt.Errorf("the libvirt provider has no uri")
	}
	return p.conns.Get(ctx, p.uri)
}

func (p *Provider) Create(ctx context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	k, err := kindOf(req.Name, string(req.Type))
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	if req.Preview {
		outs := req.Properties.Copy()
		for _, key := range k.computed() {
			if v, ok := outs[resource.PropertyKey(key)]; !ok || v.IsNull() {
				outs[resource.PropertyKey(key)] = resource.MakeComputed(resource.NewStringProperty(""))
			}
		}
		return plugin.CreateResponse{Properties: outs}, nil
	}
	ctx, cancel := p.op(ctx, req.Timeout)
	defer cancel()
	c, err := p.conn(ctx)
	if err != nil {
		return plugin.CreateResponse{}, pkit.Fail(req.Name, "create", err)
	}
	id, outs, err := k.create(ctx, c, req.Name, req.Properties)
	if err != nil {
		return plugin.CreateResponse{}, pkit.Fail(req.Name, "create", err)
	}
	return plugin.CreateResponse{ID: resource.ID(id), Properties: outs}, nil
}

func (p *Provider) Read(ctx context.Context, req plugin.ReadRequest) (plugin.ReadResponse, error) {
	k, err := kindOf(req.Name, string(req.Type))
	if err != nil {
		return plugin.ReadResponse{}, err
	}
	ctx, cancel := p.op(ctx, req.Timeout)
	defer cancel()
	c, err := p.conn(ctx)
	if err != nil {
		return plugin.ReadResponse{}, pkit.Fail(req.Name, "read", err)
	}
	outs, err := k.read(ctx, c, string(req.ID), req.Inputs, req.State)
	if err != nil {
		return plugin.ReadResponse{}, pkit.Fail(req.Name, "read", err)
	}
	if outs == nil {
		return plugin.ReadResponse{ReadResult: plugin.ReadResult{ID: req.ID}}, nil
	}
	inputs := pkit.OldInputs(req.Inputs, outs, k.inputs()...)
	if d, ok := k.(drifter); ok {
		// What changed behind Pulumi's back shows in the inputs too, so the next up repairs it.
		inputs = d.drift(inputs, outs)
	}
	return plugin.ReadResponse{ReadResult: plugin.ReadResult{ID: req.ID, Inputs: inputs, Outputs: outs}}, nil
}

func (p *Provider) Update(ctx context.Context, req plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	k, err := kindOf(req.Name, string(req.Type))
	if err != nil {
		return plugin.UpdateResponse{}, err
	}
	if req.Preview {
		return plugin.UpdateResponse{Properties: mergeOutputs(req.OldOutputs, req.NewInputs)}, nil
	}
	ctx, cancel := p.op(ctx, req.Timeout)
	defer cancel()
	c, err := p.conn(ctx)
	if err != nil {
		return plugin.UpdateResponse{}, pkit.Fail(req.Name, "update", err)
	}
	olds := pkit.OldInputs(req.OldInputs, req.OldOutputs, k.inputs()...)
	outs, err := k.update(ctx, c, string(req.ID), olds, req.NewInputs, req.OldOutputs)
	if err != nil {
		return plugin.UpdateResponse{}, pkit.Fail(req.Name, "update", err)
	}
	return plugin.UpdateResponse{Properties: outs}, nil
}

func (p *Provider) Delete(ctx context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	k, err := kindOf(req.Name, string(req.Type))
	if err != nil {
		return plugin.DeleteResponse{}, err
	}
	ctx, cancel := p.op(ctx, req.Timeout)
	defer cancel()
	c, err := p.conn(ctx)
	if err != nil {
		return plugin.DeleteResponse{}, pkit.Fail(req.Name, "delete", err)
	}
	if err := k.remove(ctx, c, string(req.ID), req.Outputs); err != nil {
		return plugin.DeleteResponse{}, pkit.Fail(req.Name, "delete", err)
	}
	return plugin.DeleteResponse{}, nil
}

// mergeOutputs: the new inputs over the old outputs (computed outputs kept).
func mergeOutputs(oldOuts, news resource.PropertyMap) resource.PropertyMap {
	out := oldOuts.Copy()
	for k, v := range news {
		out[k] = v
	}
	return out
}

// noUpdate is the update of kinds whose every input forces a new resource.
func noUpdate(typ string) error {
	return fmt.Errorf("%s is never updated in place: every change replaces it", typ)
}
