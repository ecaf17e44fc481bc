// Package command is MAC's pulumi-resource-command: remote:Command over SSH, schema-compatible
// with pulumi-command 1.2.1 for what MAC uses (connection with key, password or agent and dial
// retries; create/update/delete; environment; secret stdin; triggers). A change of `triggers`
// replaces the command (the SDK also asks for that); any other change runs `update` (or
// `create` when `update` is unset) in place. A command that exits non-zero fails the resource
// with its exit status and stderr.
package command

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"

	"mac.local/providers/internal/pkit"
	"mac.local/providers/schemas"
)

// Version is what the pulumi_command Python SDK asks for.
const Version = "1.2.1"

const (
	commandType = "command:remote:Command"
	// A command has no natural deadline; the engine's customTimeouts override this.
	defaultTimeout = 60 * time.Minute
)

var (
	commandInputs    = []string{"connection", "create", "update", "delete", "environment", "stdin", "triggers", "addPreviousOutputInEnv"}
	connectionInputs = []string{"host", "port", "user", "privateKey", "privateKeyPassword", "password",
		"agentSocketPath", "dialErrorLimit", "perDialTimeout", "hostKey"}
)

// Provider implements plugin.Provider for remote:Command.
type Provider struct {
	pkit.Plugin
	// Dial is the SSH transport (tests point it at a loopback server); nil = the real one.
	Dial Dialer
}

// New returns the provider.
func New() *Provider {
	return &Provider{Plugin: pkit.NewPlugin("command", Version, schemas.Command), Dial: dialSSH}
}

func (p *Provider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	if req.Type != commandType {
		return plugin.CheckResponse{}, fmt.Errorf("%s: resource type %s is not implemented by MAC's command provider (only remote:Command)", req.Name, req.Type)
	}
	news := pkit.WithDefaults(req.News, resource.PropertyMap{"addPreviousOutputInEnv": resource.NewBoolProperty(true)})
	failures := pkit.Unsupported("command", commandType, req.News, commandInputs...)
	conn := req.News["connection"]
	failures = append(failures, pkit.UnsupportedNested("command", commandType, "connection", conn, connectionInputs...)...)
	if !conn.ContainsUnknowns() {
		if c, ok := pkit.Object(req.News, "connection"); !ok {
			failures = append(failures, plugin.CheckFailure{Property: "connection", Reason: "connection is required"})
		} else if _, ok := pkit.String(c, "host"); !ok {
			failures = append(failures, plugin.CheckFailure{Property: "connection.host", Reason: "connection.host is required"})
		}
	}
	if conn.HasValue() && !conn.IsSecret() {
		news["connection"] = resource.MakeSecret(conn) // as upstream: the connection is secret
	}
	return plugin.CheckResponse{Properties: news, Failures: failures}, nil
}

func (p *Provider) Diff(_ context.Context, req plugin.DiffRequest) (plugin.DiffResponse, error) {
	olds := pkit.OldInputs(req.OldInputs, req.OldOutputs, commandInputs...)
	return pkit.Diff(olds, req.NewInputs, func(k string) bool { return k == "triggers" }, false), nil
}

func (p *Provider) Create(ctx context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	outs := req.Properties.Copy()
	if req.Preview {
		outs["stdout"] = resource.MakeComputed(resource.NewStringProperty(""))
		outs["stderr"] = resource.MakeComputed(resource.NewStringProperty(""))
		return plugin.CreateResponse{Properties: outs}, nil
	}
	id := resource.ID(fmt.Sprintf("%s%d", req.Name, time.Now().UnixNano()))
	script, ok := pkit.String(req.Properties, "create")
	if !ok {
		outs["stdout"], outs["stderr"] = resource.NewStringProperty(""), resource.NewStringProperty("")
		return plugin.CreateResponse{ID: id, Properties: outs}, nil
	}
	if err := p.run(ctx, req.Name, "create", req.Timeout, req.Properties, script, nil, outs); err != nil {
		return plugin.CreateResponse{}, err
	}
	return plugin.CreateResponse{ID: id, Properties: outs}, nil
}

func (p *Provider) Update(ctx context.Context, req plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	outs := req.NewInputs.Copy()
	outs["stdout"], outs["stderr"] = req.OldOutputs["stdout"], req.OldOutputs["stderr"]
	if req.Preview {
		outs["stdout"] = resource.MakeComputed(resource.NewStringProperty(""))
		outs["stderr"] = resource.MakeComputed(resource.NewStringProperty(""))
		return plugin.UpdateResponse{Properties: outs}, nil
	}
	script, ok := pkit.String(req.NewInputs, "update")
	if !ok {
		script, ok = pkit.String(req.NewInputs, "create")
	}
	if ok {
		if err := p.run(ctx, req.Name, "update", req.Timeout, req.NewInputs, script, req.OldOutputs, outs); err != nil {
			return plugin.UpdateResponse{}, err
		}
	}
	return plugin.UpdateResponse{Properties: outs}, nil
}

func (p *Provider) Delete(ctx context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	ins := req.Inputs
	if len(ins) == 0 {
		ins = req.Outputs
	}
	script, ok := pkit.String(ins, "delete")
	if !ok {
		return plugin.DeleteResponse{}, nil
	}
	discard := resource.PropertyMap{}
	return plugin.DeleteResponse{}, p.run(ctx, req.Name, "delete", req.Timeout, ins, script, req.Outputs, discard)
}

// Read: a command's effect cannot be read back; the state is what ran.
func (p *Provider) Read(_ context.Context, req plugin.ReadRequest) (plugin.ReadResponse, error) {
	return pkit.ReadState(req, commandInputs...), nil
}

// run executes one script over SSH and records stdout/stderr in outs (secret when any input
// that feeds the command is secret).
func (p *Provider) run(ctx context.Context, name, op string, timeout float64, ins resource.PropertyMap,
	script string, previous resource.PropertyMap, outs resource.PropertyMap,
) error {
	ctx, stop := p.Cancel.Join(ctx)
	defer stop()
	ctx, cancel := pkit.Timeout(ctx, timeout, defaultTimeout)
	defer cancel()

	connMap, _ := pkit.Object(ins, "connection")
	conn, err := connectionOf(connMap)
	if err != nil {
		return pkit.Fail(name, op, err)
	}
	env := map[string]string{}
	if e, ok := pkit.Object(ins, "environment"); ok {
		for _, k := range pkit.SortedKeys(e) {
			if s, ok := pkit.String(e, k); ok {
				env[k] = s
			}
		}
	}
	if previous != nil && pkit.Bool(ins, "addPreviousOutputInEnv", true) {
		env["PULUMI_COMMAND_STDOUT"] = pkit.StringOr(previous, "stdout", "")
		env["PULUMI_COMMAND_STDERR"] = pkit.StringOr(previous, "stderr", "")
	}
	stdin, _ := pkit.String(ins, "stdin")
	secret := ins["stdin"].ContainsSecrets() || ins["create"].ContainsSecrets() ||
		ins["update"].ContainsSecrets() || ins["delete"].ContainsSecrets() || ins["environment"].ContainsSecrets()

	res, err := Run(ctx, p.Dial, conn, Job{Script: script, Env: env, Stdin: stdin})
	if err != nil {
		return pkit.Fail(name, op, redact(err, ins))
	}
	stdout := resource.NewStringProperty(strings.TrimSuffix(res.Stdout, "\n"))
	stderr := resource.NewStringProperty(strings.TrimSuffix(res.Stderr, "\n"))
	if secret {
		stdout, stderr = resource.MakeSecret(stdout), resource.MakeSecret(stderr)
	}
	outs["stdout"], outs["stderr"] = stdout, stderr
	return nil
}

// redact removes the values of secret inputs from an error before it reaches the user.
func redact(err error, ins resource.PropertyMap) error {
	msg := err.Error()
	var secrets []string
	var walk func(v resource.PropertyValue, secret bool)
	walk = func(v resource.PropertyValue, secret bool) {
		switch {
		case v.IsSecret():
			walk(v.SecretValue().Element, true)
		case v.IsString() && secret && len(v.StringValue()) >= 4:
			secrets = append(secrets, v.StringValue())
		case v.IsObject():
			for _, e := range v.ObjectValue() {
				walk(e, secret)
			}
		case v.IsArray():
			for _, e := range v.ArrayValue() {
				walk(e, secret)
			}
		}
	}
	for k, v := range ins {
		if k != "connection" { // the whole connection is secret, its host is not worth hiding
			walk(v, false)
		}
	}
	if c, ok := ins["connection"]; ok {
		if m, ok := pkit.Object(resource.PropertyMap{"c": c}, "c"); ok {
			for _, k := range []string{"privateKey", "privateKeyPassword", "password"} {
				if s, ok := pkit.String(m, k); ok && s != "" {
					secrets = append(secrets, s)
				}
			}
		}
	}
	for _, s := range secrets {
		for _, line := range strings.Split(s, "\n") {
			if len(line) >= 4 {
				msg = strings.ReplaceAll(msg, line, "[secret]")
			}
		}
	}
	if msg == err.Error() {
		return err
	}
	return fmt.Errorf("%s", msg)
}
