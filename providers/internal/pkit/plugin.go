package pkit

import (
	"context"

	"github.com/blang/semver"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// Plugin answers what MAC's three plugins answer alike: their version and schema, cancellation,
// and the provider configuration of a plugin that takes none (only `version`, the engine's own).
// A plugin embeds it and defines the methods it answers differently (libvirt: its `uri`).
type Plugin struct {
	plugin.UnimplementedProvider
	// Name is the package ("command"): the provider type is pulumi:providers:<Name>.
	Name    string
	Version string
	Schema  []byte
	// Cancel ends every operation that joined it when the engine signals cancellation.
	Cancel *Canceller
}

// NewPlugin returns the shared part of a plugin, not cancelled.
func NewPlugin(name, version string, schema []byte) Plugin {
	return Plugin{Name: name, Version: version, Schema: schema, Cancel: NewCanceller()}
}

func (p *Plugin) GetPluginInfo(context.Context) (plugin.PluginInfo, error) {
	v := semver.MustParse(p.Version)
	return plugin.PluginInfo{Version: &v}, nil
}

func (p *Plugin) GetSchema(context.Context, plugin.GetSchemaRequest) (plugin.GetSchemaResponse, error) {
	return plugin.GetSchemaResponse{Schema: p.Schema}, nil
}

// CheckConfig refuses every setting: the plugin has none.
func (p *Plugin) CheckConfig(_ context.Context, req plugin.CheckConfigRequest) (plugin.CheckConfigResponse, error) {
	return plugin.CheckConfigResponse{Properties: req.News,
		Failures: Unsupported(p.Name, "pulumi:providers:"+p.Name, req.News, "version")}, nil
}

func (p *Plugin) DiffConfig(context.Context, plugin.DiffConfigRequest) (plugin.DiffConfigResponse, error) {
	return plugin.DiffResult{Changes: plugin.DiffNone}, nil
}

func (p *Plugin) Configure(context.Context, plugin.ConfigureRequest) (plugin.ConfigureResponse, error) {
	return plugin.ConfigureResponse{}, nil
}

func (p *Plugin) SignalCancellation(context.Context) error {
	p.Cancel.Cancel()
	return nil
}

// ReadState is the Read of a resource that exists only in the state (a command that ran, a
// password): reality is what the state says; the inputs are the recorded ones, or the state's
// values of `inputKeys` (e.g. after an import).
func ReadState(req plugin.ReadRequest, inputKeys ...string) plugin.ReadResponse {
	return plugin.ReadResponse{ReadResult: plugin.ReadResult{ID: req.ID,
		Inputs: OldInputs(req.Inputs, req.State, inputKeys...), Outputs: req.State}}
}
