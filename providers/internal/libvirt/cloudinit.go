package libvirt

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"strings"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/kdomanski/iso9660"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"libvirt.org/go/libvirtxml"

	"mac.local/providers/internal/pkit"
)

// cloudInitKind: a NoCloud seed ISO (volume id `cidata`; files user-data, meta-data and, when
// set, network-config) built in memory and uploaded into a pool. The id is
// `<volume key>;<random uuid>` as upstream. Every input forces a new disk.
type cloudInitKind struct{}

func (cloudInitKind) inputs() []string {
	return []string{"name", "pool", "userData", "metaData", "networkConfig"}
}
func (cloudInitKind) replaces(string) bool { return true }
func (cloudInitKind) computed() []string   { return nil }

func (cloudInitKind) check(_ string, news resource.PropertyMap) []plugin.CheckFailure {
	if !pkit.Unknown(news, "name") {
		if _, ok := pkit.String(news, "name"); !ok {
			return []plugin.CheckFailure{{Property: "name", Reason: "name is required"}}
		}
	}
	return nil
}

// SeedISO renders the NoCloud seed.
func SeedISO(userData, metaData, networkConfig string) ([]byte, error) {
	w, err := iso9660.NewWriter()
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Cleanup() }()
	files := []struct{ name, body string }{{"user-data", userData}, {"meta-data", metaData}}
	if networkConfig != "" {
		files = append(files, struct{ name, body string }{"network-config", networkConfig})
	}
	for _, f := range files {
		if err := w.AddFile(strings.NewReader(f.body), f.name); err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	if err := w.WriteTo(&buf, "cidata"); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (cloudInitKind) create(ctx context.Context, c *Conn, _ string, ins resource.PropertyMap) (string, resource.PropertyMap, error) {
	name, _ := pkit.String(ins, "name")
	iso, err := SeedISO(pkit.StringOr(ins, "userData", ""), pkit.StringOr(ins, "metaData", ""),
		pkit.StringOr(ins, "networkConfig", ""))
	if err != nil {
		return "", nil, fmt.Errorf("build cloud-init ISO %q: %w", name, err)
	}
	pool, err := poolFor(ctx, c, ins, name)
	if err != nil {
		return "", nil, err
	}
	vol, err := createVol(ctx, c, pool, libvirtxml.StorageVolume{Name: name,
		Capacity: &libvirtxml.StorageVolumeSize{Value: uint64(len(iso)), Unit: "B"},
		Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "raw"}}})
	if err != nil {
		return "", nil, err
	}
	if err := upload(ctx, c, vol, bytes.NewReader(iso), uint64(len(iso))); err != nil {
		_ = call0(context.Background(), func() error { return c.l.StorageVolDelete(vol, 0) })
		return "", nil, fmt.Errorf("upload cloud-init ISO %q: %w", name, err)
	}
	outs := ins.Copy()
	outs["pool"] = resource.NewStringProperty(pool.Name)
	return vol.Key + ";" + newUUID(), outs, nil
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return uuidString(golibvirt.UUID(b))
}

// volumeKeyOf: the volume key inside a CloudInitDisk id.
func volumeKeyOf(id string) string {
	key, _, _ := strings.Cut(id, ";")
	return key
}

func (cloudInitKind) read(ctx context.Context, c *Conn, id string, _, state resource.PropertyMap) (resource.PropertyMap, error) {
	outs, err := readVolume(ctx, c, volumeKeyOf(id), state)
	if outs == nil || err != nil {
		return outs, err
	}
	// The ISO's contents are what the state says (reading them back would mean downloading it).
	res := state.Copy()
	res["name"], res["pool"] = outs["name"], outs["pool"]
	return res, nil
}

func (cloudInitKind) update(context.Context, *Conn, string, resource.PropertyMap, resource.PropertyMap, resource.PropertyMap) (resource.PropertyMap, error) {
	return nil, noUpdate(cloudInitType)
}

func (cloudInitKind) remove(ctx context.Context, c *Conn, id string, _ resource.PropertyMap) error {
	return deleteVolume(ctx, c, volumeKeyOf(id))
}
