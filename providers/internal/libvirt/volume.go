package libvirt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"libvirt.org/go/libvirtxml"

	"mac.local/providers/internal/pkit"
)

// volumeKind: a volume in a pool, one of
//   - uploaded from `source`: a path or http(s) URL read on the machine that runs the provider
//     (the operator's or the watchdog's), streamed to the host over the libvirt connection;
//   - a copy-on-write overlay over `baseVolumeId` (qcow2 backing store), `size` or the base's;
//   - empty, of `size` bytes.
//
// Every input forces a new volume (upstream: all ForceNew). The id is the volume's key (its path).
type volumeKind struct{}

func (volumeKind) inputs() []string {
	return []string{"name", "pool", "source", "size", "format", "baseVolumeId"}
}
func (volumeKind) replaces(string) bool { return true }
func (volumeKind) computed() []string   { return []string{"size", "format"} }

func (volumeKind) check(_ string, news resource.PropertyMap) []plugin.CheckFailure {
	var f []plugin.CheckFailure
	has := func(k string) bool { v := news[resource.PropertyKey(k)]; return v.HasValue() || v.ContainsUnknowns() }
	if has("source") && has("size") {
		f = append(f, plugin.CheckFailure{Property: "size", Reason: "size cannot be set together with source (the source's size is used)"})
	}
	if has("source") && has("baseVolumeId") {
		f = append(f, plugin.CheckFailure{Property: "baseVolumeId", Reason: "source and baseVolumeId exclude each other"})
	}
	if !has("source") && !has("baseVolumeId") && !has("size") {
		f = append(f, plugin.CheckFailure{Property: "size", Reason: "size is required for a volume with neither source nor baseVolumeId"})
	}
	if !pkit.Unknown(news, "name") {
		if _, ok := pkit.String(news, "name"); !ok {
			f = append(f, plugin.CheckFailure{Property: "name", Reason: "name is required"})
		}
	}
	if fm, ok := pkit.String(news, "format"); ok && fm != "qcow2" && fm != "raw" {
		f = append(f, plugin.CheckFailure{Property: "format", Reason: fmt.Sprintf("format %q: qcow2 or raw", fm)})
	}
	return f
}

func poolOf(ctx context.Context, c *Conn, ins resource.PropertyMap) (golibvirt.StoragePool, error) {
	name := pkit.StringOr(ins, "pool", "default")
	pool, err := call(ctx, func() (golibvirt.StoragePool, error) { return c.l.StoragePoolLookupByName(name) })
	if err != nil {
		return pool, fmt.Errorf("storage pool %q on %s: %w", name, c.URI, err)
	}
	return pool, nil
}

// poolFor is the pool (input `pool`) a new volume `name` goes into, refreshed (a file removed
// behind libvirt's back stays listed until then); an error when `name` is taken there already.
func poolFor(ctx context.Context, c *Conn, ins resource.PropertyMap, name string) (golibvirt.StoragePool, error) {
	pool, err := poolOf(ctx, c, ins)
	if err != nil {
		return pool, err
	}
	_ = call0(ctx, func() error { return c.l.StoragePoolRefresh(pool, 0) })
	if _, err := call(ctx, func() (golibvirt.StorageVol, error) { return c.l.StorageVolLookupByName(pool, name) }); err == nil {
		return pool, fmt.Errorf("volume %q already exists in pool %q on %s", name, pool.Name, c.URI)
	}
	return pool, nil
}

func (volumeKind) create(ctx context.Context, c *Conn, _ string, ins resource.PropertyMap) (string, resource.PropertyMap, error) {
	name, _ := pkit.String(ins, "name")
	pool, err := poolFor(ctx, c, ins, name)
	if err != nil {
		return "", nil, err
	}
	def := libvirtxml.StorageVolume{Name: name, Target: &libvirtxml.StorageVolumeTarget{}}
	format := pkit.StringOr(ins, "format", "")
	var vol golibvirt.StorageVol
	switch source, hasSource := pkit.String(ins, "source"); {
	case hasSource:
		src, err := openSource(ctx, source)
		if err != nil {
			return "", nil, err
		}
		defer func() { _ = src.Close() }()
		if format == "" {
			format = src.format
		}
		def.Capacity = &libvirtxml.StorageVolumeSize{Value: uint64(src.size), Unit: "B"}
		def.Target.Format = &libvirtxml.StorageVolumeTargetFormat{Type: format}
		vol, err = createVol(ctx, c, pool, def)
		if err != nil {
			return "", nil, err
		}
		if err := upload(ctx, c, vol, src, uint64(src.size)); err != nil {
			_ = call0(context.Background(), func() error { return c.l.StorageVolDelete(vol, 0) })
			return "", nil, fmt.Errorf("upload %s into volume %q: %w", source, name, err)
		}
		_ = call0(ctx, func() error { return c.l.StoragePoolRefresh(pool, 0) })
	default:
		if baseID, ok := pkit.String(ins, "baseVolumeId"); ok {
			base, err := call(ctx, func() (golibvirt.StorageVol, error) { return c.l.StorageVolLookupByKey(baseID) })
			if err != nil {
				return "", nil, fmt.Errorf("base volume %s: %w", baseID, err)
			}
			baseDef, err := volDef(ctx, c, base)
			if err != nil {
				return "", nil, err
			}
			baseFormat := "raw"
			if baseDef.Target != nil && baseDef.Target.Format != nil {
				baseFormat = baseDef.Target.Format.Type
			}
			capacity := uint64(0)
			if baseDef.Capacity != nil {
				capacity = baseDef.Capacity.Value
			}
			if size, ok := pkit.Int(ins, "size"); ok {
				capacity = uint64(size)
			}
			if format == "" {
				format = "qcow2"
			}
			def.Capacity = &libvirtxml.StorageVolumeSize{Value: capacity, Unit: "B"}
			def.Target.Format = &libvirtxml.StorageVolumeTargetFormat{Type: format}
			def.BackingStore = &libvirtxml.StorageVolumeBackingStore{Path: baseDef.Target.Path,
				Format: &libvirtxml.StorageVolumeTargetFormat{Type: baseFormat}}
		} else {
			size, _ := pkit.Int(ins, "size")
			if format == "" {
				format = "qcow2"
			}
			def.Capacity = &libvirtxml.StorageVolumeSize{Value: uint64(size), Unit: "B"}
			def.Target.Format = &libvirtxml.StorageVolumeTargetFormat{Type: format}
		}
		if vol, err = createVol(ctx, c, pool, def); err != nil {
			return "", nil, err
		}
	}
	outs, err := volOutputs(ctx, c, vol, ins)
	return vol.Key, outs, err
}

func createVol(ctx context.Context, c *Conn, pool golibvirt.StoragePool, def libvirtxml.StorageVolume) (golibvirt.StorageVol, error) {
	xml, err := def.Marshal()
	if err != nil {
		return golibvirt.StorageVol{}, err
	}
	vol, err := call(ctx, func() (golibvirt.StorageVol, error) { return c.l.StorageVolCreateXML(pool, xml, 0) })
	if err != nil {
		return vol, fmt.Errorf("create volume %q in pool %q: %w", def.Name, pool.Name, err)
	}
	return vol, nil
}

func upload(ctx context.Context, c *Conn, vol golibvirt.StorageVol, r io.Reader, size uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A reader that fails once ctx ends makes go-libvirt abort the stream.
	return call0(ctx, func() error { return c.l.StorageVolUpload(vol, ctxReader{ctx, r}, 0, size, 0) })
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (cr ctxReader) Read(p []byte) (int, error) {
	if err := cr.ctx.Err(); err != nil {
		return 0, err
	}
	return cr.r.Read(p)
}

func volDef(ctx context.Context, c *Conn, vol golibvirt.StorageVol) (libvirtxml.StorageVolume, error) {
	var def libvirtxml.StorageVolume
	desc, err := call(ctx, func() (string, error) { return c.l.StorageVolGetXMLDesc(vol, 0) })
	if err != nil {
		return def, fmt.Errorf("volume %q: %w", vol.Name, err)
	}
	if err := def.Unmarshal(desc); err != nil {
		return def, err
	}
	if def.Target == nil {
		def.Target = &libvirtxml.StorageVolumeTarget{}
	}
	return def, nil
}

func volOutputs(ctx context.Context, c *Conn, vol golibvirt.StorageVol, ins resource.PropertyMap) (resource.PropertyMap, error) {
	def, err := volDef(ctx, c, vol)
	if err != nil {
		return nil, err
	}
	outs := ins.Copy()
	outs["name"] = resource.NewStringProperty(vol.Name)
	outs["pool"] = resource.NewStringProperty(vol.Pool)
	if def.Capacity != nil {
		outs["size"] = resource.NewNumberProperty(float64(def.Capacity.Value))
	}
	if def.Target.Format != nil {
		outs["format"] = resource.NewStringProperty(def.Target.Format.Type)
	}
	return outs, nil
}

func (volumeKind) read(ctx context.Context, c *Conn, id string, _, state resource.PropertyMap) (resource.PropertyMap, error) {
	return readVolume(ctx, c, id, state)
}

func readVolume(ctx context.Context, c *Conn, key string, state resource.PropertyMap) (resource.PropertyMap, error) {
	// A file removed behind libvirt's back stays listed until the pool is refreshed.
	if pool, err := poolOf(ctx, c, state); err == nil {
		_ = call0(ctx, func() error { return c.l.StoragePoolRefresh(pool, 0) })
	}
	vol, err := call(ctx, func() (golibvirt.StorageVol, error) { return c.l.StorageVolLookupByKey(key) })
	if notFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("look up volume %s: %w", key, err)
	}
	return volOutputs(ctx, c, vol, state)
}

func (volumeKind) update(context.Context, *Conn, string, resource.PropertyMap, resource.PropertyMap, resource.PropertyMap) (resource.PropertyMap, error) {
	return nil, noUpdate(volumeType)
}

func (volumeKind) remove(ctx context.Context, c *Conn, id string, _ resource.PropertyMap) error {
	return deleteVolume(ctx, c, id)
}

func deleteVolume(ctx context.Context, c *Conn, key string) error {
	vol, err := call(ctx, func() (golibvirt.StorageVol, error) { return c.l.StorageVolLookupByKey(key) })
	if notFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("look up volume %s: %w", key, err)
	}
	if err := call0(ctx, func() error { return c.l.StorageVolDelete(vol, 0) }); err != nil && !notFound(err) {
		return fmt.Errorf("delete volume %s: %w", key, err)
	}
	return nil
}

// source is an image to upload: its bytes, size and detected format.
type source struct {
	io.Reader
	io.Closer
	size   int64
	format string
}

var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

func openSource(ctx context.Context, ref string) (*source, error) {
	var body io.ReadCloser
	var size int64
	switch {
	case strings.HasPrefix(ref, "http://") || strings.HasPrefix(ref, "https://"):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", ref, err)
		}
		if resp.StatusCode != http.StatusOK {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("source %s: HTTP %s", ref, resp.Status)
		}
		if resp.ContentLength < 0 {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("source %s: the server sends no Content-Length", ref)
		}
		body, size = resp.Body, resp.ContentLength
	default:
		path := strings.TrimPrefix(ref, "file://")
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("source (read on the machine running pulumi): %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return nil, err
		}
		body, size = f, st.Size()
	}
	br := bufio.NewReader(body)
	head, _ := br.Peek(4)
	format := "raw"
	if bytes.Equal(head, qcow2Magic) {
		format = "qcow2"
	}
	return &source{Reader: br, Closer: body, size: size, format: format}, nil
}
