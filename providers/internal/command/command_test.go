package command

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"golang.org/x/crypto/ssh"
)

// sshServer is a real SSH server on loopback that runs exec requests with /bin/sh; it accepts
// `env` requests only for names starting with ACCEPTED_ (like sshd's AcceptEnv).
func sshServer(t *testing.T, clientKey ssh.PublicKey) string {
	t.Helper()
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(clientKey.Marshal()) {
			return nil, nil
		}
		return nil, ssh.ErrNoAuth
	}}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			go serveConn(raw, cfg)
		}
	}()
	return ln.Addr().String()
}

func serveConn(raw net.Conn, cfg *ssh.ServerConfig) {
	_, chans, reqs, err := ssh.NewServerConn(raw, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go func() {
			var env []string
			for req := range creqs {
				switch req.Type {
				case "env":
					var kv struct{ K, V string }
					_ = ssh.Unmarshal(req.Payload, &kv)
					ok := strings.HasPrefix(kv.K, "ACCEPTED_")
					if ok {
						env = append(env, kv.K+"="+kv.V)
					}
					_ = req.Reply(ok, nil)
				case "exec":
					var p struct{ Cmd string }
					_ = ssh.Unmarshal(req.Payload, &p)
					_ = req.Reply(true, nil)
					cmd := exec.Command("/bin/sh", "-c", p.Cmd)
					cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
					cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
					code := 0
					if err := cmd.Run(); err != nil {
						code = 1
						if ee, ok := err.(*exec.ExitError); ok {
							code = ee.ExitCode()
						}
					}
					status := make([]byte, 4)
					binary.BigEndian.PutUint32(status, uint32(code))
					_, _ = ch.SendRequest("exit-status", false, status)
					_ = ch.Close()
				default:
					_ = req.Reply(false, nil)
				}
			}
		}()
	}
}

func clientKey(t *testing.T) (string, ssh.PublicKey) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	return string(pem.EncodeToMemory(block)), signer.PublicKey()
}

func inputs(addr, key string, extra resource.PropertyMap) resource.PropertyMap {
	host, port, _ := net.SplitHostPort(addr)
	var portNum float64
	for _, c := range port {
		portNum = portNum*10 + float64(c-'0')
	}
	ins := resource.PropertyMap{
		"connection": resource.MakeSecret(resource.NewObjectProperty(resource.PropertyMap{
			"host": resource.NewStringProperty(host), "port": resource.NewNumberProperty(portNum),
			"user": resource.NewStringProperty("root"), "privateKey": resource.MakeSecret(resource.NewStringProperty(key)),
			"dialErrorLimit": resource.NewNumberProperty(2), "perDialTimeout": resource.NewNumberProperty(2),
		})),
	}
	for k, v := range extra {
		ins[k] = v
	}
	return ins
}

func TestCreateRunsOverSSHWithEnvAndSecretStdin(t *testing.T) {
	key, pub := clientKey(t)
	addr := sshServer(t, pub)
	p := New()
	ins := inputs(addr, key, resource.PropertyMap{
		"create": resource.NewStringProperty(`read line; echo "got $line $ACCEPTED_A $OTHER_B"; echo warn >&2`),
		"stdin":  resource.MakeSecret(resource.NewStringProperty("s3cret\n")),
		"environment": resource.NewObjectProperty(resource.PropertyMap{
			"ACCEPTED_A": resource.NewStringProperty("a"), "OTHER_B": resource.NewStringProperty("b it's"),
		}),
	})
	resp, err := p.Create(context.Background(), plugin.CreateRequest{Name: "step", Type: commandType, Properties: ins})
	if err != nil {
		t.Fatal(err)
	}
	out := resp.Properties["stdout"]
	if !out.IsSecret() || out.SecretValue().Element.StringValue() != "got s3cret a b it's" {
		t.Fatalf("stdout %v (must be secret: stdin is)", out)
	}
	if resp.Properties["stderr"].SecretValue().Element.StringValue() != "warn" {
		t.Fatalf("stderr %v", resp.Properties["stderr"])
	}
	if !resp.Properties["stdin"].IsSecret() {
		t.Fatal("stdin lost its secrecy in the outputs")
	}
}

func TestNonZeroExitFailsWithStderrAndSecretsRedacted(t *testing.T) {
	key, pub := clientKey(t)
	addr := sshServer(t, pub)
	p := New()
	ins := inputs(addr, key, resource.PropertyMap{
		"create": resource.NewStringProperty(`cat >&2; echo ' boom' >&2; exit 3`),
		"stdin":  resource.MakeSecret(resource.NewStringProperty("hunter22")),
	})
	_, err := p.Create(context.Background(), plugin.CreateRequest{Name: "step", Type: commandType, Properties: ins})
	if err == nil {
		t.Fatal("exit 3 did not fail")
	}
	msg := err.Error()
	if !strings.Contains(msg, "step") || !strings.Contains(msg, "exited 3") || !strings.Contains(msg, "boom") {
		t.Fatalf("error does not name the resource, status and stderr: %s", msg)
	}
	if strings.Contains(msg, "hunter22") {
		t.Fatalf("secret stdin leaked into the error: %s", msg)
	}
}

func TestDialRetriesThenNamesTheHost(t *testing.T) {
	key, _ := clientKey(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens: every dial is refused
	var mu sync.Mutex
	attempts := 0
	p := New()
	p.Dial = func(ctx context.Context, a string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
		mu.Lock()
		attempts++
		mu.Unlock()
		return dialSSH(ctx, a, cfg)
	}
	start := time.Now()
	_, err := p.Create(context.Background(), plugin.CreateRequest{Name: "step", Type: commandType,
		Properties: inputs(addr, key, resource.PropertyMap{"create": resource.NewStringProperty("true")})})
	if err == nil || !strings.Contains(err.Error(), addr) || attempts != 2 {
		t.Fatalf("err %v after %d attempts", err, attempts)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("retries took too long")
	}
}

func TestCheckAndDiff(t *testing.T) {
	p := New()
	resp, _ := p.Check(context.Background(), plugin.CheckRequest{Name: "c", Type: commandType, News: resource.PropertyMap{
		"connection": resource.NewObjectProperty(resource.PropertyMap{
			"host": resource.NewStringProperty("h"), "proxy": resource.NewObjectProperty(resource.PropertyMap{})}),
		"logging": resource.NewStringProperty("stdout"),
	}})
	names := []string{}
	for _, f := range resp.Failures {
		names = append(names, string(f.Property))
	}
	if strings.Join(names, ",") != "logging,connection.proxy" {
		t.Fatalf("failures %v", resp.Failures)
	}
	if !resp.Properties["connection"].IsSecret() {
		t.Fatal("connection must be secret")
	}
	olds := resource.PropertyMap{"create": resource.NewStringProperty("a"),
		"triggers": resource.NewArrayProperty([]resource.PropertyValue{resource.NewStringProperty("d1")})}
	upd := olds.Copy()
	upd["create"] = resource.NewStringProperty("b")
	d, _ := p.Diff(context.Background(), plugin.DiffRequest{OldInputs: olds, NewInputs: upd})
	if d.Changes != plugin.DiffSome || len(d.ReplaceKeys) != 0 {
		t.Fatalf("create change must update in place: %+v", d)
	}
	rep := olds.Copy()
	rep["triggers"] = resource.NewArrayProperty([]resource.PropertyValue{resource.MakeComputed(resource.NewStringProperty(""))})
	d, _ = p.Diff(context.Background(), plugin.DiffRequest{OldInputs: olds, NewInputs: rep})
	if len(d.ReplaceKeys) != 1 || d.ReplaceKeys[0] != "triggers" {
		t.Fatalf("an unknown trigger must replace: %+v", d)
	}
}
