package libvirt

import (
	"bytes"
	"context"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kdomanski/iso9660"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
)

func str(s string) resource.PropertyValue  { return resource.NewStringProperty(s) }
func num(n float64) resource.PropertyValue { return resource.NewNumberProperty(n) }

func TestParseURI(t *testing.T) {
	for _, ok := range []string{"qemu:///system", "qemu+ssh://root@10.0.0.11:2222/system?keyfile=/k",
		"qemu+unix:///system?socket=/tmp/h1/libvirt-sock", "qemu+tcp://h:16509/system", "test:///default"} {
		if _, err := ParseURI(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"http://h/", "qemu://host/system", "qemu+ssh:///system", "xen:///"} {
		if _, err := ParseURI(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func failures(t *testing.T, typ string, news resource.PropertyMap) []string {
	t.Helper()
	resp, err := New().Check(context.Background(), plugin.CheckRequest{Name: "r", Type: tokens.Type("libvirt:index/" + typ), News: news})
	if err != nil {
		t.Fatal(err)
	}
	var props []string
	for _, f := range resp.Failures {
		props = append(props, string(f.Property))
		if !strings.Contains(f.Reason, strings.Split(string(f.Property), ".")[len(strings.Split(string(f.Property), "."))-1]) &&
			!strings.Contains(f.Reason, "required") && !strings.Contains(f.Reason, "exclude") && !strings.Contains(f.Reason, "cannot") {
			t.Errorf("reason %q does not name %s", f.Reason, f.Property)
		}
	}
	sort.Strings(props)
	return props
}

func TestCheckRefusesUnimplementedInputsByName(t *testing.T) {
	got := failures(t, "domain:Domain", resource.PropertyMap{
		"name": str("d"), "graphics": resource.NewObjectProperty(resource.PropertyMap{"type": str("vnc")}),
		"disks": resource.NewArrayProperty([]resource.PropertyValue{resource.NewObjectProperty(resource.PropertyMap{
			"volumeId": str("/p/v"), "scsi": resource.NewBoolProperty(true)})}),
		"networkInterfaces": resource.NewArrayProperty([]resource.PropertyValue{resource.NewObjectProperty(resource.PropertyMap{
			"bridge": str("br0"), "waitForLease": resource.NewBoolProperty(true)})}),
	})
	want := []string{"disks.scsi", "graphics", "networkInterfaces[0].waitForLease"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("failures %v, want %v", got, want)
	}
	if got := failures(t, "pool:Pool", resource.PropertyMap{"name": str("p"), "type": str("logical"),
		"target": resource.NewObjectProperty(resource.PropertyMap{"path": str("/x")})}); strings.Join(got, ",") != "type" {
		t.Fatalf("logical pool: %v", got)
	}
	if got := failures(t, "volume:Volume", resource.PropertyMap{"name": str("v"), "source": str("/img"), "size": num(1)}); strings.Join(got, ",") != "size" {
		t.Fatalf("source+size: %v", got)
	}
	// Unknown inputs (preview) are not refused.
	if got := failures(t, "volume:Volume", resource.PropertyMap{"name": str("v"),
		"baseVolumeId": resource.MakeComputed(str(""))}); len(got) != 0 {
		t.Fatalf("unknown baseVolumeId refused: %v", got)
	}
	if _, err := New().Check(context.Background(), plugin.CheckRequest{Name: "n", Type: "libvirt:index/network:Network"}); err == nil ||
		!strings.Contains(err.Error(), "network:Network is not implemented") {
		t.Fatalf("Network type: %v", err)
	}
}

func diff(t *testing.T, typ string, olds, news resource.PropertyMap) plugin.DiffResult {
	t.Helper()
	d, err := New().Diff(context.Background(), plugin.DiffRequest{Name: "r", Type: tokens.Type("libvirt:index/" + typ), OldInputs: olds, NewInputs: news})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDiffFollowsUpstreamForceNew(t *testing.T) {
	dom := resource.PropertyMap{"name": str("db1"), "memory": num(512), "autostart": resource.NewBoolProperty(false),
		"cloudinit": str("/p/ci.iso;u1")}
	if d := diff(t, "domain:Domain", dom, dom.Copy()); d.Changes != plugin.DiffNone {
		t.Fatalf("no-op: %+v", d)
	}
	upd := dom.Copy()
	upd["autostart"], upd["cloudinit"] = resource.NewBoolProperty(true), str("/p/ci.iso;u2")
	if d := diff(t, "domain:Domain", dom, upd); d.Changes != plugin.DiffSome || len(d.ReplaceKeys) != 0 {
		t.Fatalf("autostart/cloudinit must update in place: %+v", d)
	}
	rep := dom.Copy()
	rep["memory"] = num(1024)
	if d := diff(t, "domain:Domain", dom, rep); len(d.ReplaceKeys) != 1 || !d.DeleteBeforeReplace {
		t.Fatalf("memory must replace, deleting first (same name): %+v", d)
	}
	renamed := dom.Copy()
	renamed["name"] = str("db9")
	if d := diff(t, "domain:Domain", dom, renamed); len(d.ReplaceKeys) != 1 || d.DeleteBeforeReplace {
		t.Fatalf("a rename replaces without deleting first: %+v", d)
	}
	vol := resource.PropertyMap{"name": str("v"), "pool": str("p"), "baseVolumeId": str("/p/base")}
	unknownBase := vol.Copy()
	unknownBase["baseVolumeId"] = resource.MakeComputed(str(""))
	if d := diff(t, "volume:Volume", vol, unknownBase); len(d.ReplaceKeys) != 1 {
		t.Fatalf("an unknown base must show a possible replacement: %+v", d)
	}
}

func TestConfigureAndPreviewNeverDial(t *testing.T) {
	p := New()
	if _, err := p.Configure(context.Background(), plugin.ConfigureRequest{Inputs: resource.PropertyMap{
		"uri": str("qemu+ssh://root@192.0.2.1:2222/system")}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := p.Create(context.Background(), plugin.CreateRequest{Name: "v", Type: volumeType, Preview: true,
		Properties: resource.PropertyMap{"name": str("v"), "baseVolumeId": resource.MakeComputed(str(""))}})
	if err != nil || !resp.Properties["size"].IsComputed() || time.Since(start) > time.Second {
		t.Fatalf("preview: %v %v", err, resp.Properties)
	}
	if len(p.conns.conns) != 0 {
		t.Fatal("preview dialled the host")
	}
}

func TestUnreachableHostErrorNamesTheURIAndResource(t *testing.T) {
	p := New()
	uri := "qemu+unix:///system?socket=" + t.TempDir() + "/nobody-sock"
	_, _ = p.Configure(context.Background(), plugin.ConfigureRequest{Inputs: resource.PropertyMap{"uri": str(uri)}})
	_, err := p.Delete(context.Background(), plugin.DeleteRequest{Name: "db1-domain", Type: domainType,
		ID: "8a1e7c2b-3c44-4d55-8e66-7f8091a2b3c4"})
	if err == nil || !strings.Contains(err.Error(), "db1-domain") || !strings.Contains(err.Error(), "cannot connect to libvirt at "+uri) {
		t.Fatalf("error %v", err)
	}
}

func TestSecretInputsStaySecretInOutputs(t *testing.T) {
	ins := resource.PropertyMap{"name": str("n.iso"), "userData": resource.MakeSecret(str("#cloud-config\npassword: x"))}
	resp, _ := New().Create(context.Background(), plugin.CreateRequest{Name: "ci", Type: cloudInitType, Preview: true, Properties: ins})
	if !resp.Properties["userData"].IsSecret() {
		t.Fatal("userData lost its secrecy")
	}
}

func TestSeedISOHoldsTheNoCloudFiles(t *testing.T) {
	iso, err := SeedISO("#cloud-config\n", "{\"instance-id\": \"mac-db1\"}\n", "version: 2\n")
	if err != nil {
		t.Fatal(err)
	}
	img, err := iso9660.OpenImage(bytes.NewReader(iso))
	if err != nil {
		t.Fatal(err)
	}
	if label, _ := img.Label(); label != "cidata" {
		t.Fatalf("volume id %q, NoCloud needs cidata", label)
	}
	root, _ := img.RootDir()
	children, _ := root.GetChildren()
	files := map[string]string{}
	for _, c := range children {
		b, _ := io.ReadAll(c.Reader())
		files[c.Name()] = string(b)
	}
	if files["user-data"] != "#cloud-config\n" || !strings.Contains(files["meta-data"], "mac-db1") || files["network-config"] != "version: 2\n" {
		t.Fatalf("files %v", files)
	}
	noNet, _ := SeedISO("#cloud-config\n", "{}", "")
	img, _ = iso9660.OpenImage(bytes.NewReader(noNet))
	root, _ = img.RootDir()
	children, _ = root.GetChildren()
	if len(children) != 2 {
		t.Fatalf("an empty network-config must be left out, got %d files", len(children))
	}
}

func TestUUIDRoundTrip(t *testing.T) {
	s := "8a1e7c2b-3c44-4d55-8e66-7f8091a2b3c4"
	u, err := parseUUID(s)
	if err != nil || uuidString(u) != s {
		t.Fatalf("%v %s", err, uuidString(u))
	}
}

func TestDomainDriftShowsInInputs(t *testing.T) {
	ins := resource.PropertyMap{"name": str("db1"), "memory": num(256)}
	outs := resource.PropertyMap{"name": str("db1"), "memory": num(256), "vcpu": num(1),
		"running": resource.NewBoolProperty(false), "autostart": resource.NewBoolProperty(false)}
	got := domainKind{}.drift(ins, outs)
	if got["running"].BoolValue() || got["memory"].NumberValue() != 256 {
		t.Fatalf("drift %v", got)
	}
	if _, ok := got["autostart"]; ok {
		t.Fatal("no drift in autostart, yet it was added")
	}
	d := diff(t, "domain:Domain", got, ins)
	if d.Changes != plugin.DiffSome || len(d.ReplaceKeys) != 0 {
		t.Fatalf("a stopped domain must be started in place: %+v", d)
	}
}

func TestCmdlineJoinsUpstreamMaps(t *testing.T) {
	got := cmdline([]resource.PropertyMap{{"root": str("LABEL=root"), "console": str("ttyS0")}, {"_": str("quiet")}})
	if got != "console=ttyS0 root=LABEL=root quiet" {
		t.Fatalf("%q", got)
	}
}
