package libvirt

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"libvirt.org/go/libvirtxml"

	"mac.local/providers/internal/pkit"
)

// domainKind: a VM with what MAC's program sets: type, vcpu, memory, disks (volumes), the
// cloud-init ISO as a cdrom, bridge NICs with fixed MACs, consoles, the qemu guest agent channel,
// autostart and running, and direct kernel boot (kernel, initrd, cmdlines). Started on create; destroyed and undefined on delete. The id is the
// domain's UUID. Replacement follows upstream's ForceNew flags; cloudinit, networkInterfaces,
// qemuAgent, kernel, initrd, autostart and running update in place (the persistent definition is rewritten and
// takes effect at the next boot; autostart and running at once).
type domainKind struct{}

var domainInPlace = []string{"autostart", "running", "cloudinit", "networkInterfaces", "qemuAgent", "kernel", "initrd"}

func (domainKind) inputs() []string {
	return []string{"name", "type", "vcpu", "memory", "autostart", "running", "qemuAgent", "cloudinit",
		"disks", "networkInterfaces", "consoles", "kernel", "initrd", "cmdlines"}
}
func (domainKind) replaces(key string) bool { return pkit.ReplaceExcept(domainInPlace...)(key) }
func (domainKind) computed() []string       { return nil }

func (domainKind) check(_ string, news resource.PropertyMap) []plugin.CheckFailure {
	var f []plugin.CheckFailure
	f = append(f, pkit.UnsupportedNested("libvirt", domainType, "disks", news["disks"], "volumeId")...)
	f = append(f, pkit.UnsupportedNested("libvirt", domainType, "networkInterfaces", news["networkInterfaces"],
		"bridge", "mac", "hostname", "waitForLease")...)
	f = append(f, pkit.UnsupportedNested("libvirt", domainType, "consoles", news["consoles"],
		"type", "targetPort", "targetType")...)
	if !pkit.Unknown(news, "name") {
		if _, ok := pkit.String(news, "name"); !ok {
			f = append(f, plugin.CheckFailure{Property: "name", Reason: "name is required"})
		}
	}
	for i, nic := range pkit.Objects(news, "networkInterfaces") {
		if pkit.Bool(nic, "waitForLease", false) {
			f = append(f, plugin.CheckFailure{Property: resource.PropertyKey(fmt.Sprintf("networkInterfaces[%d].waitForLease", i)),
				Reason: "waitForLease is not implemented by MAC's libvirt provider (MAC's nodes have static IPs)"})
		}
		if _, ok := nic["bridge"]; !ok {
			f = append(f, plugin.CheckFailure{Property: resource.PropertyKey(fmt.Sprintf("networkInterfaces[%d].bridge", i)),
				Reason: "only bridge interfaces are implemented: set bridge"})
		}
	}
	for i, d := range pkit.Objects(news, "disks") {
		if _, ok := d["volumeId"]; !ok {
			f = append(f, plugin.CheckFailure{Property: resource.PropertyKey(fmt.Sprintf("disks[%d].volumeId", i)),
				Reason: "only volume disks are implemented: set volumeId"})
		}
	}
	return f
}

// domainXML renders the definition; volumes are looked up on the host for their paths.
func domainXML(ctx context.Context, c *Conn, ins resource.PropertyMap, uuid string) (string, error) {
	name, _ := pkit.String(ins, "name")
	def := libvirtxml.Domain{
		Type:   pkit.StringOr(ins, "type", "kvm"),
		Name:   name,
		UUID:   uuid,
		Memory: &libvirtxml.DomainMemory{Value: uint(pkit.IntOr(ins, "memory", 512)), Unit: "MiB"},
		VCPU:   &libvirtxml.DomainVCPU{Value: uint(pkit.IntOr(ins, "vcpu", 1))},
		OS: &libvirtxml.DomainOS{
			Type:        &libvirtxml.DomainOSType{Type: "hvm", Arch: "x86_64"},
			BootDevices: []libvirtxml.DomainBootDevice{{Dev: "hd"}},
		},
		Features: &libvirtxml.DomainFeatureList{PAE: &libvirtxml.DomainFeature{},
			ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}},
		Devices: &libvirtxml.DomainDeviceList{},
	}
	// Direct kernel boot (golden images without a boot loader): paths on the host.
	def.OS.Kernel = pkit.StringOr(ins, "kernel", "")
	def.OS.Initrd = pkit.StringOr(ins, "initrd", "")
	def.OS.Cmdline = cmdline(pkit.Objects(ins, "cmdlines"))
	for i, d := range pkit.Objects(ins, "disks") {
		key, _ := pkit.String(d, "volumeId")
		vol, err := call(ctx, func() (golibvirt.StorageVol, error) { return c.l.StorageVolLookupByKey(key) })
		if err != nil {
			return "", fmt.Errorf("disk %d: volume %s: %w", i, key, err)
		}
		vdef, err := volDef(ctx, c, vol)
		if err != nil {
			return "", err
		}
		format := "raw"
		if vdef.Target.Format != nil {
			format = vdef.Target.Format.Type
		}
		def.Devices.Disks = append(def.Devices.Disks, libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: format},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: vdef.Target.Path}},
			Target: &libvirtxml.DomainDiskTarget{Dev: "vd" + string(rune('a'+i)), Bus: "virtio"},
		})
	}
	if ci, ok := pkit.String(ins, "cloudinit"); ok && ci != "" {
		key := volumeKeyOf(ci)
		vol, err := call(ctx, func() (golibvirt.StorageVol, error) { return c.l.StorageVolLookupByKey(key) })
		if err != nil {
			return "", fmt.Errorf("cloudinit: volume %s: %w", key, err)
		}
		vdef, err := volDef(ctx, c, vol)
		if err != nil {
			return "", err
		}
		def.Devices.Disks = append(def.Devices.Disks, cdrom(vdef.Target.Path))
	}
	for _, nic := range pkit.Objects(ins, "networkInterfaces") {
		iface := libvirtxml.DomainInterface{
			Source: &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: pkit.StringOr(nic, "bridge", "")}},
			Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
		}
		if mac, ok := pkit.String(nic, "mac"); ok && mac != "" {
			iface.MAC = &libvirtxml.DomainInterfaceMAC{Address: mac}
		}
		def.Devices.Interfaces = append(def.Devices.Interfaces, iface)
	}
	for _, con := range pkit.Objects(ins, "consoles") {
		port64, err := strconv.ParseUint(pkit.StringOr(con, "targetPort", "0"), 10, 32)
		if err != nil {
			return "", fmt.Errorf("consoles: targetPort: %w", err)
		}
		port := uint(port64)
		if t := pkit.StringOr(con, "type", "pty"); t != "pty" {
			return "", fmt.Errorf("consoles: type %q is not implemented (pty)", t)
		}
		def.Devices.Consoles = append(def.Devices.Consoles, libvirtxml.DomainConsole{
			Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Target: &libvirtxml.DomainConsoleTarget{Type: pkit.StringOr(con, "targetType", "serial"), Port: &port},
		})
	}
	if pkit.Bool(ins, "qemuAgent", false) {
		def.Devices.Channels = append(def.Devices.Channels, libvirtxml.DomainChannel{
			Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind"}},
			Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: "org.qemu.guest_agent.0"}},
		})
	}
	return def.Marshal()
}

// cmdline joins upstream's list of maps: `key=value` words, a `_` key for a bare word.
func cmdline(maps []resource.PropertyMap) string {
	var words []string
	for _, m := range maps {
		for _, k := range pkit.SortedKeys(m) {
			v := pkit.StringOr(m, k, "")
			if k == "_" {
				words = append(words, v)
			} else {
				words = append(words, k+"="+v)
			}
		}
	}
	return strings.Join(words, " ")
}

func cdrom(path string) libvirtxml.DomainDisk {
	return libvirtxml.DomainDisk{
		Device:   "cdrom",
		Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
		Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}},
		Target:   &libvirtxml.DomainDiskTarget{Dev: "hdd", Bus: "ide"},
		ReadOnly: &libvirtxml.DomainDiskReadOnly{},
	}
}

func (k domainKind) create(ctx context.Context, c *Conn, _ string, ins resource.PropertyMap) (string, resource.PropertyMap, error) {
	name, _ := pkit.String(ins, "name")
	if _, err := call(ctx, func() (golibvirt.Domain, error) { return c.l.DomainLookupByName(name) }); err == nil {
		return "", nil, fmt.Errorf("domain %q already exists on %s", name, c.URI)
	}
	xml, err := domainXML(ctx, c, ins, "")
	if err != nil {
		return "", nil, err
	}
	dom, err := call(ctx, func() (golibvirt.Domain, error) { return c.l.DomainDefineXML(xml) })
	if err != nil {
		return "", nil, fmt.Errorf("define domain %q: %w", name, err)
	}
	id := uuidString(dom.UUID)
	if err := applyState(ctx, c, dom, ins); err != nil {
		_ = call0(context.Background(), func() error { return c.l.DomainDestroy(dom) })
		_ = call0(context.Background(), func() error { return c.l.DomainUndefineFlags(dom, undefineFlags) })
		return "", nil, err
	}
	outs, err := k.outputs(ctx, c, dom, ins)
	return id, outs, err
}

const undefineFlags = golibvirt.DomainUndefineManagedSave | golibvirt.DomainUndefineSnapshotsMetadata | golibvirt.DomainUndefineNvram

// applyState sets autostart and starts (or stops) the domain as the inputs ask.
func applyState(ctx context.Context, c *Conn, dom golibvirt.Domain, ins resource.PropertyMap) error {
	autostart := int32(0)
	if pkit.Bool(ins, "autostart", false) {
		autostart = 1
	}
	if err := call0(ctx, func() error { return c.l.DomainSetAutostart(dom, autostart) }); err != nil {
		return fmt.Errorf("domain %q: autostart: %w", dom.Name, err)
	}
	state, err := domainState(ctx, c, dom)
	if err != nil {
		return err
	}
	running := state == golibvirt.DomainRunning || state == golibvirt.DomainPaused || state == golibvirt.DomainBlocked
	switch want := pkit.Bool(ins, "running", true); {
	case want && !running:
		if err := call0(ctx, func() error { return c.l.DomainCreate(dom) }); err != nil {
			return fmt.Errorf("start domain %q: %w", dom.Name, err)
		}
	case !want && running:
		if err := call0(ctx, func() error { return c.l.DomainDestroy(dom) }); err != nil {
			return fmt.Errorf("stop domain %q: %w", dom.Name, err)
		}
	}
	return nil
}

func domainState(ctx context.Context, c *Conn, dom golibvirt.Domain) (golibvirt.DomainState, error) {
	st, err := call(ctx, func() (int32, error) { s, _, err := c.l.DomainGetState(dom, 0); return s, err })
	if err != nil {
		return 0, fmt.Errorf("domain %q: state: %w", dom.Name, err)
	}
	return golibvirt.DomainState(st), nil
}

// outputs: the inputs, with what the host says about name, type, vcpu, memory, autostart and
// running (so a refresh shows drift there).
func (domainKind) outputs(ctx context.Context, c *Conn, dom golibvirt.Domain, ins resource.PropertyMap) (resource.PropertyMap, error) {
	desc, err := call(ctx, func() (string, error) { return c.l.DomainGetXMLDesc(dom, golibvirt.DomainXMLInactive) })
	if err != nil {
		return nil, fmt.Errorf("domain %q: %w", dom.Name, err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(desc); err != nil {
		return nil, err
	}
	autostart, err := call(ctx, func() (int32, error) { return c.l.DomainGetAutostart(dom) })
	if err != nil {
		return nil, fmt.Errorf("domain %q: autostart: %w", dom.Name, err)
	}
	state, err := domainState(ctx, c, dom)
	if err != nil {
		return nil, err
	}
	outs := ins.Copy()
	outs["name"] = resource.NewStringProperty(def.Name)
	outs["type"] = resource.NewStringProperty(def.Type)
	if def.VCPU != nil {
		outs["vcpu"] = resource.NewNumberProperty(float64(def.VCPU.Value))
	}
	if def.Memory != nil {
		mib := def.Memory.Value
		switch def.Memory.Unit {
		case "KiB", "":
			mib /= 1024
		case "GiB":
			mib *= 1024
		}
		outs["memory"] = resource.NewNumberProperty(float64(mib))
	}
	outs["autostart"] = resource.NewBoolProperty(autostart == 1)
	outs["running"] = resource.NewBoolProperty(state == golibvirt.DomainRunning || state == golibvirt.DomainBlocked || state == golibvirt.DomainPaused)
	if def.OS != nil && def.OS.Type != nil {
		outs["machine"] = resource.NewStringProperty(def.OS.Type.Machine)
		outs["arch"] = resource.NewStringProperty(def.OS.Type.Arch)
	}
	return outs, nil
}

// drift: a domain stopped, started, (un)autostarted or resized behind Pulumi's back reads back
// as inputs that differ from the program's, so `refresh` shows it and the next `up` repairs it.
func (domainKind) drift(inputs, outs resource.PropertyMap) resource.PropertyMap {
	in := inputs.Copy()
	effective := map[string]resource.PropertyValue{
		"running":   resource.NewBoolProperty(pkit.Bool(inputs, "running", true)),
		"autostart": resource.NewBoolProperty(pkit.Bool(inputs, "autostart", false)),
		"vcpu":      resource.NewNumberProperty(float64(pkit.IntOr(inputs, "vcpu", 1))),
		"memory":    resource.NewNumberProperty(float64(pkit.IntOr(inputs, "memory", 512))),
	}
	for k, want := range effective {
		got, ok := outs[resource.PropertyKey(k)]
		if ok && !got.DeepEquals(want) && !inputs[resource.PropertyKey(k)].ContainsUnknowns() {
			in[resource.PropertyKey(k)] = got
		}
	}
	return in
}

func lookupDomain(ctx context.Context, c *Conn, id string) (golibvirt.Domain, error) {
	u, err := parseUUID(id)
	if err != nil {
		return golibvirt.Domain{}, err
	}
	return call(ctx, func() (golibvirt.Domain, error) { return c.l.DomainLookupByUUID(u) })
}

func (k domainKind) read(ctx context.Context, c *Conn, id string, _, state resource.PropertyMap) (resource.PropertyMap, error) {
	dom, err := lookupDomain(ctx, c, id)
	if notFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("look up domain %s: %w", id, err)
	}
	return k.outputs(ctx, c, dom, state)
}

func (k domainKind) update(ctx context.Context, c *Conn, id string, olds, news, _ resource.PropertyMap) (resource.PropertyMap, error) {
	dom, err := lookupDomain(ctx, c, id)
	if err != nil {
		return nil, fmt.Errorf("look up domain %s: %w", id, err)
	}
	xml, err := domainXML(ctx, c, news, id)
	if err != nil {
		return nil, err
	}
	if _, err := call(ctx, func() (golibvirt.Domain, error) { return c.l.DomainDefineXML(xml) }); err != nil {
		return nil, fmt.Errorf("redefine domain %q: %w", dom.Name, err)
	}
	oldCI, _ := pkit.String(olds, "cloudinit")
	newCI, _ := pkit.String(news, "cloudinit")
	if oldCI != newCI && newCI != "" {
		if st, err := domainState(ctx, c, dom); err == nil && st == golibvirt.DomainRunning {
			if vol, err := call(ctx, func() (golibvirt.StorageVol, error) { return c.l.StorageVolLookupByKey(volumeKeyOf(newCI)) }); err == nil {
				if vdef, err := volDef(ctx, c, vol); err == nil {
					if dx, err := (&[]libvirtxml.DomainDisk{cdrom(vdef.Target.Path)}[0]).Marshal(); err == nil {
						// Swap the live cdrom too; a failure leaves it for the next boot.
						_ = call0(ctx, func() error {
							return c.l.DomainUpdateDeviceFlags(dom, dx, golibvirt.DomainDeviceModifyLive)
						})
					}
				}
			}
		}
	}
	if err := applyState(ctx, c, dom, news); err != nil {
		return nil, err
	}
	return k.outputs(ctx, c, dom, news)
}

func (domainKind) remove(ctx context.Context, c *Conn, id string, _ resource.PropertyMap) error {
	dom, err := lookupDomain(ctx, c, id)
	if notFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("look up domain %s: %w", id, err)
	}
	if st, err := domainState(ctx, c, dom); err == nil && st != golibvirt.DomainShutoff {
		if err := call0(ctx, func() error { return c.l.DomainDestroy(dom) }); err != nil && !notFound(err) {
			return fmt.Errorf("destroy domain %q: %w", dom.Name, err)
		}
	}
	if err := call0(ctx, func() error { return c.l.DomainUndefineFlags(dom, undefineFlags) }); err != nil && !notFound(err) {
		return fmt.Errorf("undefine domain %q: %w", dom.Name, err)
	}
	return nil
}
