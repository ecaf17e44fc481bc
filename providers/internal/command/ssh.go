package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"mac.local/providers/internal/pkit"
)

// Connection is where and how a command runs.
type Connection struct {
	Host, User                         string
	Port                               int
	PrivateKey, PrivateKeyPassword     string
	Password, AgentSocketPath, HostKey string
	DialErrorLimit                     int // -1: no limit
	PerDialTimeout                     time.Duration
}

func connectionOf(m resource.PropertyMap) (Connection, error) {
	c := Connection{
		Host:               pkit.StringOr(m, "host", ""),
		User:               pkit.StringOr(m, "user", "root"),
		Port:               int(pkit.IntOr(m, "port", 22)),
		PrivateKey:         pkit.StringOr(m, "privateKey", ""),
		PrivateKeyPassword: pkit.StringOr(m, "privateKeyPassword", ""),
		Password:           pkit.StringOr(m, "password", ""),
		AgentSocketPath:    pkit.StringOr(m, "agentSocketPath", ""),
		HostKey:            pkit.StringOr(m, "hostKey", ""),
		DialErrorLimit:     int(pkit.IntOr(m, "dialErrorLimit", 10)),
		PerDialTimeout:     time.Duration(pkit.IntOr(m, "perDialTimeout", 15)) * time.Second,
	}
	if c.Host == "" {
		return c, errors.New("connection.host is required")
	}
	return c, nil
}

func (c Connection) address() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

func (c Connection) clientConfig() (*ssh.ClientConfig, func(), error) {
	var auths []ssh.AuthMethod
	cleanup := func() {}
	if c.PrivateKey != "" {
		var signer ssh.Signer
		var err error
		if c.PrivateKeyPassword != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(c.PrivateKey), []byte(c.PrivateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(c.PrivateKey))
		}
		if err != nil {
			return nil, cleanup, fmt.Errorf("connection.privateKey: %w", err)
		}
		auths = append(auths, ssh.PublicKeys(signer))
	}
	if c.Password != "" {
		auths = append(auths, ssh.Password(c.Password))
	}
	sock := c.AgentSocketPath
	if sock == "" {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock != "" {
		if a, err := net.Dial("unix", sock); err == nil {
			auths = append(auths, ssh.PublicKeysCallback(agent.NewClient(a).Signers))
			cleanup = func() { _ = a.Close() }
		}
	}
	if len(auths) == 0 {
		return nil, cleanup, errors.New("no SSH credentials: set connection.privateKey or password, or run an SSH agent")
	}
	hostKey := ssh.InsecureIgnoreHostKey() // upstream's default when hostKey is not given
	if c.HostKey != "" {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.HostKey))
		if err != nil {
			return nil, cleanup, fmt.Errorf("connection.hostKey: %w", err)
		}
		hostKey = ssh.FixedHostKey(pub)
	}
	return &ssh.ClientConfig{User: c.User, Auth: auths, HostKeyCallback: hostKey, Timeout: c.PerDialTimeout}, cleanup, nil
}

// Dialer opens an SSH client (one attempt, bounded by ctx).
type Dialer func(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error)

func dialSSH(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	d := net.Dialer{Timeout: cfg.Timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	} else if cfg.Timeout > 0 {
		_ = raw.SetDeadline(time.Now().Add(cfg.Timeout))
	}
	cc, chans, reqs, err := ssh.NewClientConn(raw, addr, cfg)
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return ssh.NewClient(cc, chans, reqs), nil
}

// dial retries while the host boots: up to DialErrorLimit failed attempts of PerDialTimeout each.
func dial(ctx context.Context, dialer Dialer, c Connection) (*ssh.Client, func(), error) {
	cfg, cleanup, err := c.clientConfig()
	if err != nil {
		return nil, cleanup, err
	}
	var last error
	for attempt := 1; c.DialErrorLimit < 0 || attempt <= max(c.DialErrorLimit, 1); attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.PerDialTimeout)
		client, err := dialer(actx, c.address(), cfg)
		cancel()
		if err == nil {
			return client, cleanup, nil
		}
		last = err
		if ctx.Err() != nil || isAuthError(err) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt)*time.Second, 5*time.Second)):
		}
	}
	cleanup()
	return nil, func() {}, fmt.Errorf("ssh %s@%s: %w", c.User, c.address(), last)
}

func isAuthError(err error) bool {
	return strings.Contains(err.Error(), "unable to authenticate")
}

// Job is one script to run.
type Job struct {
	Script string
	Env    map[string]string
	Stdin  string
}

// Result is what a job printed.
type Result struct{ Stdout, Stderr string }

// Run dials (with retries) and runs the job; a non-zero exit is an error with stderr.
func Run(ctx context.Context, dialer Dialer, c Connection, job Job) (Result, error) {
	client, cleanup, err := dial(ctx, dialer, c)
	defer cleanup()
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = client.Close() }()
	session, err := client.NewSession()
	if err != nil {
		return Result{}, fmt.Errorf("ssh session on %s: %w", c.address(), err)
	}
	defer func() { _ = session.Close() }()
	script := job.Script
	var exports []string
	for _, k := range sortedKeys(job.Env) {
		if err := session.Setenv(k, job.Env[k]); err != nil {
			// sshd without AcceptEnv for it: pass it in the script instead
			exports = append(exports, fmt.Sprintf("export %s=%s;", k, shellQuote(job.Env[k])))
		}
	}
	if len(exports) > 0 {
		script = strings.Join(exports, " ") + " " + script
	}
	var stdout, stderr bytes.Buffer
	session.Stdout, session.Stderr = &stdout, &stderr
	if job.Stdin != "" {
		session.Stdin = strings.NewReader(job.Stdin)
	}
	done := make(chan error, 1)
	go func() { done <- session.Run(script) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = session.Signal(ssh.SIGTERM)
		_ = client.Close()
		return Result{stdout.String(), stderr.String()}, fmt.Errorf("command on %s stopped: %w", c.address(), context.Cause(ctx))
	}
	res := Result{stdout.String(), stderr.String()}
	if err != nil {
		var exit *ssh.ExitError
		if errors.As(err, &exit) {
			return res, fmt.Errorf("command on %s exited %d: %s", c.address(), exit.ExitStatus(), tail(res.Stderr, 4000))
		}
		return res, fmt.Errorf("command on %s: %w: %s", c.address(), err, tail(res.Stderr, 4000))
	}
	return res, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
