// Command pulumi-language-python is MAC's Python language host for the Pulumi engine.
//
// Why our own: the upstream host (module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3)
// is not served by the Go module proxy this project can reach (403 "This module version is not
// available" for every version), and no other registry ships it. This host implements the
// LanguageRuntime gRPC service from the served module github.com/pulumi/pulumi/sdk/v3 and runs
// programs with the project's virtualenv through the SDK's own toolchain package. It covers what
// `pulumi preview/up/destroy/refresh` and the Automation API need for a pip + virtualenv project
// (runtime options `toolchain: pip`, `virtualenv: DIR`): plugin discovery from the installed
// provider packages' pulumi-plugin.json, running the program, and running a Python policy pack
// (`pulumi preview --policy-pack DIR`: RunPlugin with kind analyzer). It does not implement code
// generation, templates, `pulumi new` or `pulumi install` (those answer Unimplemented).
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	pbempty "google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// Version of this host, reported to the engine. Set with -ldflags "-X main.Version=...".
var Version = "0.0.0-mac"

//go:embed exec.py
var execScript string

// exitReported is the runner's exit code for "error already reported to the engine".
const exitReported = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
}

func main() {
	args := os.Args[1:]
	// Flags the engine or users may pass (-tracing, -root, -virtualenv, ...) are accepted and
	// ignored: the program's runtime options come with each request. The engine address is last.
	var positional []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			continue
		}
		positional = append(positional, a)
	}
	h := &host{}
	if len(positional) > 0 {
		h.engineAddress = positional[len(positional)-1]
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
		Options: rpcutil.TracingServerInterceptorOptions(nil),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: could not start the gRPC server: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
		os.Exit(1)
	}
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *pbempty.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

// options reads the runtime options of Pulumi.yaml (`runtime.options`).
func options(info *pulumirpc.ProgramInfo) (tc, venv string) {
	if info == nil || info.GetOptions() == nil {
		return "pip", ""
	}
	m := info.GetOptions().AsMap()
	tc, _ = m["toolchain"].(string)
	venv, _ = m["virtualenv"].(string)
	if tc == "" {
		tc = "pip"
	}
	return tc, venv
}

func resolve(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	tcName, venv := options(info)
	if tcName != "pip" {
		return nil, fmt.Errorf("MAC's language host supports runtime option toolchain: pip only, not %q", tcName)
	}
	root := info.GetRootDirectory()
	if venv != "" && !filepath.IsAbs(venv) {
		venv = filepath.Join(root, venv)
	}
	return toolchain.ResolveToolchain(toolchain.PythonOptions{
		Toolchain:  toolchain.Pip,
		Virtualenv: venv,
		Root:       root,
		ProgramDir: info.GetProgramDirectory(),
	})
}

// entryPoint is the program (or policy pack) to run: the entry point, relative to the program
// directory, "." (the directory's __main__.py) when unset.
func entryPoint(info *pulumirpc.ProgramInfo) string {
	program := info.GetEntryPoint()
	if program == "" {
		program = "."
	}
	if !filepath.IsAbs(program) {
		program = filepath.Join(info.GetProgramDirectory(), program)
	}
	return program
}

// pluginJSON is the pulumi-plugin.json that provider SDK packages (pulumi_libvirt, ...) ship.
type pluginJSON struct {
	Resource bool   `json:"resource"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Server   string `json:"server"`
}

// sitePackages asks the program's interpreter where its packages live.
func sitePackages(ctx context.Context, tc toolchain.Toolchain) ([]string, error) {
	cmd, err := tc.Command(ctx, "-c", "import json, site, sys; print(json.dumps(site.getsitepackages() + [site.getusersitepackages()]))")
	if err != nil {
		return nil, err
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing site-packages: %w", err)
	}
	var dirs []string
	if err := json.Unmarshal(out, &dirs); err != nil {
		return nil, fmt.Errorf("listing site-packages: %w", err)
	}
	return dirs, nil
}

func requiredPackages(ctx context.Context, info *pulumirpc.ProgramInfo) ([]*pulumirpc.PackageDependency, error) {
	tc, err := resolve(info)
	if err != nil {
		return nil, err
	}
	dirs, err := sitePackages(ctx, tc)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var deps []*pulumirpc.PackageDependency
	for _, dir := range dirs {
		matches, _ := filepath.Glob(filepath.Join(dir, "*", "pulumi-plugin.json"))
		sort.Strings(matches)
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err != nil {
				continue
			}
			var p pluginJSON
			if json.Unmarshal(b, &p) != nil || !p.Resource || p.Name == "" || seen[p.Name] {
				continue
			}
			seen[p.Name] = true
			version := p.Version
			if version != "" && !strings.HasPrefix(version, "v") {
				version = "v" + version
			}
			deps = append(deps, &pulumirpc.PackageDependency{
				Kind: "resource", Name: p.Name, Version: version, Server: p.Server,
			})
		}
	}
	return deps, nil
}

func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	deps, err := requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: deps}, nil
}

func (h *host) GetRequiredPlugins(ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	deps, err := requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	plugins := make([]*pulumirpc.PluginDependency, 0, len(deps))
	for _, d := range deps {
		plugins = append(plugins, &pulumirpc.PluginDependency{
			Name: d.Name, Kind: d.Kind, Version: d.Version, Server: d.Server,
		})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	if info == nil {
		info = &pulumirpc.ProgramInfo{
			RootDirectory: req.GetPwd(), ProgramDirectory: req.GetPwd(), EntryPoint: req.GetProgram(),
		}
	}
	tc, err := resolve(info)
	if err != nil {
		return nil, err
	}
	program := entryPoint(info)
	cfg := req.GetConfig()
	if cfg == nil {
		cfg = map[string]string{}
	}
	config, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secrets, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}

	cmd, err := tc.Command(ctx, append([]string{"-u", "-c", execScript, program}, req.GetArgs()...)...)
	if err != nil {
		return nil, err
	}
	cmd.Dir = req.GetPwd()
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(env,
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secrets),
		"MAC_PULUMI_PROJECT="+req.GetProject(),
		"MAC_PULUMI_STACK="+req.GetStack(),
		"MAC_PULUMI_ORGANIZATION="+req.GetOrganization(),
		"MAC_PULUMI_MONITOR="+req.GetMonitorAddress(),
		"MAC_PULUMI_ENGINE="+h.engineAddress,
		"MAC_PULUMI_PARALLEL="+strconv.Itoa(int(req.GetParallel())),
		"MAC_PULUMI_DRY_RUN="+strconv.FormatBool(req.GetDryRun()),
		"MAC_PULUMI_ROOT_DIRECTORY="+info.GetRootDirectory(),
	)
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == exitReported {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("python program exited with code %d", exitErr.ExitCode())}, nil
		}
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := resolve(req.GetInfo())
	if err != nil {
		return nil, err
	}
	about, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: about.PythonExecutable,
		Version:    about.PythonVersion.String(),
		Metadata:   map[string]string{"host": "mac pulumi-language-python " + Version},
	}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := resolve(req.GetInfo())
	if err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	out := make([]*pulumirpc.DependencyInfo, 0, len(pkgs))
	for _, p := range pkgs {
		out = append(out, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: out}, nil
}

func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

// RunPlugin runs a plugin written in Python; the engine uses it for policy packs
// (PulumiPolicy.yaml with `runtime: python`). Like the upstream host, it runs the pack's directory
// (`python -u DIR ARGS...`, i.e. DIR/__main__.py with DIR on sys.path) with the pack's virtualenv
// (runtime option `virtualenv`, relative to the pack), and streams its stdout (the engine reads the
// analyzer's gRPC port from the first line), its stderr and finally its exit code.
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	if kind := req.GetKind(); kind != "" && kind != string(apitype.AnalyzerPlugin) {
		return fmt.Errorf("MAC's language host runs Python policy packs only, not %s plugins", kind)
	}
	info := req.GetInfo()
	if info == nil {
		dir := req.GetProgram() //nolint:staticcheck // older engines send only the deprecated field
		info = &pulumirpc.ProgramInfo{RootDirectory: dir, ProgramDirectory: dir, EntryPoint: "."}
	}
	tc, err := resolve(info)
	if err != nil {
		return err
	}
	program := entryPoint(info)
	ctx := server.Context()
	cmd, err := tc.Command(ctx, append([]string{"-u", program}, req.GetArgs()...)...)
	if err != nil {
		return err
	}
	cmd.Dir = req.GetPwd()
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	// The engine's environment for the plugin first, then the virtualenv's activation on top.
	cmd.Env = append(append([]string{}, req.GetEnv()...), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting policy pack %s: %w", program, err)
	}
	var mu sync.Mutex // server.Send is not safe for concurrent use
	send := func(r *pulumirpc.RunPluginResponse) error {
		mu.Lock()
		defer mu.Unlock()
		return server.Send(r)
	}
	var wg sync.WaitGroup
	pump := func(r interface{ Read([]byte) (int, error) }, wrap func([]byte) *pulumirpc.RunPluginResponse) {
		defer wg.Done()
		buf := make([]byte, 32*1024)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				chunk := append([]byte(nil), buf[:n]...)
				if send(wrap(chunk)) != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(2)
	go pump(stdout, func(b []byte) *pulumirpc.RunPluginResponse {
		return &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: b}}
	})
	go pump(stderr, func(b []byte) *pulumirpc.RunPluginResponse {
		return &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: b}}
	})
	wg.Wait() // both pipes closed: the process has exited (or closed them)
	code := 0
	if err := cmd.Wait(); err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return err
		}
		code = exitErr.ExitCode()
	}
	return send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)}})
}
