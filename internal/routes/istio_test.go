package routes

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/vane-io/vane/internal/api"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var cfg = api.IstioRouting{VirtualService: "provider", Routes: []string{"test-v1"}, DestinationRule: "dubbo-provider", StableSubset: "stable", CanarySubset: "canary"}

// load reads a testdata object both as raw JSON (what the API server holds)
// and into obj (what vane reads).
func load(t *testing.T, name string, obj any) []byte {
	t.Helper()
	y, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, obj); err != nil {
		t.Fatal(err)
	}
	return raw
}

// golden applies ops to raw as the API server would and compares the result
// with testdata/<name>.
func golden(t *testing.T, raw []byte, ops []patchOp, name string) {
	t.Helper()
	data, _ := json.Marshal(ops)
	p, err := jsonpatch.DecodePatch(data)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("apply %s: %v", data, err)
	}
	got, err := yaml.JSONToYAML(out)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want,+got):\n%s", name, diff)
	}
}

func TestWeightPatch(t *testing.T) {
	vs := &networkingv1.VirtualService{}
	raw := load(t, "vs-provider.yaml", vs)
	if w, err := canaryWeight(vs, cfg); err != nil || w != 0 {
		t.Fatalf("canaryWeight = %d, %v; want 0", w, err)
	}
	ops, err := weightPatch(vs, cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, raw, ops, "vs-provider.weight5.golden.yaml")

	// Writing the weight it already has writes nothing.
	if ops, _ := weightPatch(vs, cfg, 0); len(ops) != 0 {
		t.Errorf("weight 0 on a VirtualService at 0: ops %v, want none", ops)
	}
}

func TestSubsetPatch(t *testing.T) {
	dr := &networkingv1.DestinationRule{}
	raw := load(t, "dr-provider.yaml", dr)
	ops, err := subsetPatch(dr, cfg, "version", Split{StableVersion: "v1", CanaryVersion: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, raw, ops, "dr-provider.v1-v2.golden.yaml")

	// Back to no version: the key goes, other labels stay.
	moved := &networkingv1.DestinationRule{}
	movedRaw := load(t, "dr-provider.v1-v2.golden.yaml", moved)
	if s, c, _ := subsetVersions(moved, cfg, "version"); s != "v1" || c != "v2" {
		t.Fatalf("subsetVersions = %q, %q; want v1, v2", s, c)
	}
	ops, err = subsetPatch(moved, cfg, "version", Split{})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, movedRaw, ops, "dr-provider.unversioned.golden.yaml")
}

func TestMissing(t *testing.T) {
	vs := &networkingv1.VirtualService{}
	load(t, "vs-provider.yaml", vs)
	dr := &networkingv1.DestinationRule{}
	load(t, "dr-provider.yaml", dr)
	cases := map[string]struct {
		cfg  api.IstioRouting
		err  func() error
		want string
	}{
		"route": {want: `VirtualService provider has no http route named "nope"`, err: func() error {
			c := cfg
			c.Routes = []string{"test-v1", "nope"}
			_, err := weightPatch(vs, c, 5)
			return err
		}},
		"canary destination": {want: `http route "lane-test" of VirtualService provider has no destination with subset "stable"`, err: func() error {
			c := cfg
			c.Routes = []string{"lane-test"}
			_, err := canaryWeight(vs, c)
			return err
		}},
		"subset": {want: `DestinationRule dubbo-provider has no subset "preview"`, err: func() error {
			c := cfg
			c.CanarySubset = "preview"
			_, err := subsetPatch(dr, c, "version", Split{})
			return err
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := tc.err()
			if !errors.Is(err, ErrMissing) {
				t.Fatalf("error %v does not wrap ErrMissing", err)
			}
			if got := err.Error(); len(got) < len(tc.want) || got[:len(tc.want)] != tc.want {
				t.Errorf("error = %q, want prefix %q", got, tc.want)
			}
		})
	}
}
