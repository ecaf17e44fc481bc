package libvirt

import (
	"context"
	"fmt"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"libvirt.org/go/libvirtxml"

	"mac.local/providers/internal/pkit"
)

// poolKind: a `dir` storage pool, defined, built (its directory made), started and autostarted.
// Every input forces a new pool (upstream: all ForceNew). The id is the pool's UUID.
type poolKind struct{}

func (poolKind) inputs() []string     { return []string{"name", "type", "target", "path"} }
func (poolKind) replaces(string) bool { return true }
func (poolKind) computed() []string   { return []string{"capacity", "allocation", "available"} }

func (poolKind) check(_ string, news resource.PropertyMap) []plugin.CheckFailure {
	var f []plugin.CheckFailure
	f = append(f, pkit.UnsupportedNested("libvirt", poolType, "target", news["target"], "path")...)
	if t, ok := pkit.String(news, "type"); ok && t != "dir" {
		f = append(f, plugin.CheckFailure{Property: "type", Reason: fmt.Sprintf("%s: pool type %q is not implemented by MAC's libvirt provider (only dir)", poolType, t)})
	} else if !ok && !pkit.Unknown(news, "type") {
		f = append(f, plugin.CheckFailure{Property: "type", Reason: "type is required (dir)"})
	}
	if !pkit.Unknown(news, "name") {
		if _, ok := pkit.String(news, "name"); !ok {
			f = append(f, plugin.CheckFailure{Property: "name", Reason: "name is required"})
		}
	}
	if !pkit.Unknown(news, "target") && !pkit.Unknown(news, "path") && poolPath(news) == "" {
		f = append(f, plugin.CheckFailure{Property: "target", Reason: "target.path is required for a dir pool"})
	}
	return f
}

func poolPath(m resource.PropertyMap) string {
	if t, ok := pkit.Object(m, "target"); ok {
		if p, ok := pkit.String(t, "path"); ok {
			return p
		}
	}
	return pkit.StringOr(m, "path", "")
}

func (poolKind) create(ctx context.Context, c *Conn, _ string, ins resource.PropertyMap) (string, resource.PropertyMap, error) {
	name, _ := pkit.String(ins, "name")
	path := poolPath(ins)
	if _, err := call(ctx, func() (golibvirt.StoragePool, error) { return c.l.StoragePoolLookupByName(name) }); err == nil {
		return "", nil, fmt.Errorf("storage pool %q already exists on %s", name, c.URI)
	}
	xml, err := (&libvirtxml.StoragePool{Type: "dir", Name: name,
		Target: &libvirtxml.StoragePoolTarget{Path: path}}).Marshal()
	if err != nil {
		return "", nil, err
	}
	pool, err := call(ctx, func() (golibvirt.StoragePool, error) { return c.l.StoragePoolDefineXML(xml, 0) })
	if err != nil {
		return "", nil, fmt.Errorf("define storage pool %q: %w", name, err)
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"build", func() error { return c.l.StoragePoolBuild(pool, 0) }},
		{"start", func() error { return c.l.StoragePoolCreate(pool, 0) }},
		{"autostart", func() error { return c.l.StoragePoolSetAutostart(pool, 1) }},
	}
	for _, s := range steps {
		if err := call0(ctx, s.do); err != nil {
			_ = call0(ctx, func() error { return c.l.StoragePoolUndefine(pool) })
			return "", nil, fmt.Errorf("%s storage pool %q at %s: %w", s.what, name, path, err)
		}
	}
	outs, err := poolOutputs(ctx, c, pool, ins)
	return uuidString(pool.UUID), outs, err
}

func poolOutputs(ctx context.Context, c *Conn, pool golibvirt.StoragePool, ins resource.PropertyMap) (resource.PropertyMap, error) {
	type info struct{ capacity, allocation, available uint64 }
	i, err := call(ctx, func() (info, error) {
		_, c1, a1, v1, err := c.l.StoragePoolGetInfo(pool)
		return info{c1, a1, v1}, err
	})
	if err != nil {
		return nil, fmt.Errorf("storage pool %q: %w", pool.Name, err)
	}
	desc, err := call(ctx, func() (string, error) { return c.l.StoragePoolGetXMLDesc(pool, 0) })
	if err != nil {
		return nil, fmt.Errorf("storage pool %q: %w", pool.Name, err)
	}
	var def libvirtxml.StoragePool
	if err := def.Unmarshal(desc); err != nil {
		return nil, err
	}
	outs := ins.Copy()
	outs["name"] = resource.NewStringProperty(def.Name)
	outs["type"] = resource.NewStringProperty(def.Type)
	if def.Target != nil {
		outs["target"] = resource.NewObjectProperty(resource.PropertyMap{"path": resource.NewStringProperty(def.Target.Path)})
	}
	outs["capacity"] = resource.NewNumberProperty(float64(i.capacity))
	outs["allocation"] = resource.NewNumberProperty(float64(i.allocation))
	outs["available"] = resource.NewNumberProperty(float64(i.available))
	return outs, nil
}

func (poolKind) read(ctx context.Context, c *Conn, id string, _, state resource.PropertyMap) (resource.PropertyMap, error) {
	u, err := parseUUID(id)
	if err != nil {
		return nil, err
	}
	pool, err := call(ctx, func() (golibvirt.StoragePool, error) { return c.l.StoragePoolLookupByUUID(u) })
	if notFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("look up storage pool %s: %w", id, err)
	}
	return poolOutputs(ctx, c, pool, state)
}

func (poolKind) update(context.Context, *Conn, string, resource.PropertyMap, resource.PropertyMap, resource.PropertyMap) (resource.PropertyMap, error) {
	return nil, noUpdate(poolType)
}

func (poolKind) remove(ctx context.Context, c *Conn, id string, _ resource.PropertyMap) error {
	u, err := parseUUID(id)
	if err != nil {
		return err
	}
	pool, err := call(ctx, func() (golibvirt.StoragePool, error) { return c.l.StoragePoolLookupByUUID(u) })
	if notFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("look up storage pool %s: %w", id, err)
	}
	active, err := call(ctx, func() (int32, error) { return c.l.StoragePoolIsActive(pool) })
	if err != nil {
		return fmt.Errorf("storage pool %q: %w", pool.Name, err)
	}
	if active == 1 {
		if err := call0(ctx, func() error { return c.l.StoragePoolDestroy(pool) }); err != nil {
			return fmt.Errorf("stop storage pool %q: %w", pool.Name, err)
		}
	}
	// Remove the pool's (empty) directory as upstream does; then forget the pool.
	if err := call0(ctx, func() error { return c.l.StoragePoolDelete(pool, 0) }); err != nil {
		return fmt.Errorf("delete storage pool %q's directory: %w", pool.Name, err)
	}
	if err := call0(ctx, func() error { return c.l.StoragePoolUndefine(pool) }); err != nil {
		return fmt.Errorf("undefine storage pool %q: %w", pool.Name, err)
	}
	return nil
}
