package schemas

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// The embedded schemas are the published ones: byte-identical to ../../shared/schemas where
// that folder is laid out beside the repository (it is in the project's sessions and CI).
func TestSchemasArePublished(t *testing.T) {
	for name, data := range map[string][]byte{
		"pulumi-libvirt-0.5.4.schema.json": Libvirt,
		"pulumi-command-1.2.1.schema.json": Command,
		"pulumi-random-4.21.4.schema.json": Random,
	} {
		var s struct {
			Name      string                     `json:"name"`
			Resources map[string]json.RawMessage `json:"resources"`
		}
		if err := json.Unmarshal(data, &s); err != nil || len(s.Resources) == 0 {
			t.Fatalf("%s: %v", name, err)
		}
		shared := filepath.Join("..", "..", "..", "shared", "schemas", name)
		if b, err := os.ReadFile(shared); err == nil && !bytes.Equal(b, data) {
			t.Errorf("%s differs from %s", name, shared)
		}
	}
	var r struct {
		Resources map[string]json.RawMessage `json:"resources"`
	}
	_ = json.Unmarshal(Random, &r)
	if _, ok := r.Resources["random:index/randomPassword:RandomPassword"]; !ok {
		t.Fatal("random schema without RandomPassword")
	}
}
