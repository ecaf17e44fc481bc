package libvirt

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"mac.local/providers/internal/pkit"
)

// dialTimeout bounds one connection attempt (TCP/SSH handshake and libvirt's own).
const dialTimeout = 20 * time.Second

// ParseURI accepts the libvirt URIs MAC supports: qemu:///system, qemu+unix:///system?socket=...,
// qemu+ssh://user@host[:port]/system (port honoured), qemu+tcp://host[:port]/system.
func ParseURI(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("uri %q: %w", raw, err)
	}
	switch u.Scheme {
	case "qemu", "qemu+unix", "test":
		if u.Host != "" {
			return nil, fmt.Errorf("uri %q: a remote qemu host needs a transport: qemu+ssh:// or qemu+tcp://", raw)
		}
	case "qemu+ssh", "qemu+tcp", "qemu+tls":
		if u.Hostname() == "" {
			return nil, fmt.Errorf("uri %q names no host", raw)
		}
	default:
		return nil, fmt.Errorf("uri %q: scheme %q is not supported by MAC's libvirt provider (qemu, qemu+unix, qemu+ssh, qemu+tcp, qemu+tls, test)", raw, u.Scheme)
	}
	return u, nil
}

// Conn is one connection to one libvirtd.
type Conn struct {
	URI string
	l   *golibvirt.Libvirt
	// mu serialises calls that go-libvirt runs on one stream (uploads).
	mu sync.Mutex
}

// Conns holds one connection per URI, dialled on first use and reused.
type Conns struct {
	mu    sync.Mutex
	conns map[string]*Conn
}

// NewConns returns an empty set.
func NewConns() *Conns { return &Conns{conns: map[string]*Conn{}} }

// Get returns the live connection for uri, dialling it if needed.
func (cs *Conns) Get(ctx context.Context, uri string) (*Conn, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c, ok := cs.conns[uri]; ok && c.l.IsConnected() {
		return c, nil
	}
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	l, err := pkit.Do(dctx, func() (*golibvirt.Libvirt, error) { return golibvirt.ConnectToURI(u) })
	if err != nil {
		return nil, fmt.Errorf("cannot connect to libvirt at %s: %w", redactURI(u), err)
	}
	c := &Conn{URI: uri, l: l}
	cs.conns[uri] = c
	return c, nil
}

// Close disconnects everything.
func (cs *Conns) Close() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for uri, c := range cs.conns {
		_ = c.l.Disconnect()
		delete(cs.conns, uri)
	}
}

func redactURI(u *url.URL) string {
	c := *u
	if c.User != nil {
		if _, has := c.User.Password(); has {
			c.User = url.UserPassword(c.User.Username(), "xxxxx")
		}
	}
	return c.String()
}

// call runs one libvirt RPC, giving up when ctx ends.
func call[T any](ctx context.Context, f func() (T, error)) (T, error) { return pkit.Do(ctx, f) }

func call0(ctx context.Context, f func() error) error {
	_, err := pkit.Do(ctx, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

// notFound says whether err is libvirt's "no such domain/pool/volume".
func notFound(err error) bool {
	var lerr golibvirt.Error
	if errors.As(err, &lerr) {
		switch golibvirt.ErrorNumber(lerr.Code) {
		case golibvirt.ErrNoDomain, golibvirt.ErrNoStoragePool, golibvirt.ErrNoStorageVol:
			return true
		}
	}
	return err != nil && (strings.Contains(err.Error(), "Storage volume not found") ||
		strings.Contains(err.Error(), "Domain not found") || strings.Contains(err.Error(), "Storage pool not found"))
}

// uuidString formats a libvirt UUID the way virsh prints it.
func uuidString(u golibvirt.UUID) string {
	b := u[:]
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func parseUUID(s string) (golibvirt.UUID, error) {
	var u golibvirt.UUID
	hex := strings.ReplaceAll(s, "-", "")
	if len(hex) != 32 {
		return u, fmt.Errorf("%q is not a UUID", s)
	}
	for i := range 16 {
		var b byte
		if _, err := fmt.Sscanf(hex[2*i:2*i+2], "%02x", &b); err != nil {
			return u, fmt.Errorf("%q is not a UUID", s)
		}
		u[i] = b
	}
	return u, nil
}
