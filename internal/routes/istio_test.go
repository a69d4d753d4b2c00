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

var legacy = api.IstioRouting{VirtualService: "provider", Routes: []string{"test-v1"}, ManagedRoutes: []string{"test-v2", "test-v3"}, StableService: "dubbo3-provider", CanaryService: "dubbo3-provider-canary"}

var laneV2 = api.HeaderRoute{Name: "test-v2", Match: []api.HeaderMatch{{Name: "lane", Exact: "test-v2"}}}

// The seed's header scenario: a lane route inserted before test-v1, split by
// host; weights by host too.
func TestHeaderRoutesByHost(t *testing.T) {
	vs := &networkingv1.VirtualService{}
	raw := load(t, "vs-legacy.yaml", vs)
	if w, err := canaryWeight(vs, legacy); err != nil || w != 0 {
		t.Fatalf("canaryWeight = %d, %v; want 0 (the canary host matched in its long form)", w, err)
	}
	ops, err := headerRoutePatch(vs, legacy, []api.HeaderRoute{laneV2})
	if err != nil {
		t.Fatal(err)
	}
	w, err := weightPatch(vs, legacy, 30)
	if err != nil {
		t.Fatal(err)
	}
	// Weights first at the old indexes, as Ensure writes them, then routes.
	golden(t, raw, append(w, ops...), "vs-legacy.lane-v2.golden.yaml")

	withLane := &networkingv1.VirtualService{}
	withLaneRaw := load(t, "vs-legacy.lane-v2.golden.yaml", withLane)
	if diff := cmp.Diff([]api.HeaderRoute{laneV2}, headerRoutes(withLane, legacy)); diff != "" {
		t.Errorf("headerRoutes read back (-want,+got):\n%s", diff)
	}
	if ops, _ := headerRoutePatch(withLane, legacy, []api.HeaderRoute{laneV2}); len(ops) != 0 {
		t.Errorf("the same header route again: ops %v, want none", ops)
	}
	// No header routes wanted: the managed route goes, nothing else moves.
	ops, err = headerRoutePatch(withLane, legacy, nil)
	if err != nil {
		t.Fatal(err)
	}
	back, _ := weightPatch(withLane, legacy, 0)
	golden(t, withLaneRaw, append(back, ops...), "vs-legacy.yaml.roundtrip.golden.yaml")
}

func TestHeaderRoutePatchKinds(t *testing.T) {
	vs := &networkingv1.VirtualService{}
	raw := load(t, "vs-provider.yaml", vs)
	c := cfg
	c.ManagedRoutes = []string{"a", "b"}
	want := []api.HeaderRoute{
		{Name: "a", Match: []api.HeaderMatch{{Name: "user", Regex: "^(alice|bob)$"}, {Name: "lane", Prefix: "test"}}},
		{Name: "b", Match: []api.HeaderMatch{{Name: "x-canary", Exact: "1"}}},
	}
	ops, err := headerRoutePatch(vs, c, want)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, raw, ops, "vs-provider.header-kinds.golden.yaml")

	// Changing one route replaces it in place; the other stays.
	after := &networkingv1.VirtualService{}
	afterRaw := load(t, "vs-provider.header-kinds.golden.yaml", after)
	want[1].Match[0].Exact = "2"
	ops, err = headerRoutePatch(after, c, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || ops[0].Op != "remove" || ops[1].Op != "add" || ops[0].Path != ops[1].Path {
		t.Errorf("ops %+v, want a remove and an add at the same index", ops)
	}
	golden(t, afterRaw, ops, "vs-provider.header-kinds-changed.golden.yaml")
}

func TestLabelPatch(t *testing.T) {
	cases := map[string]struct {
		labels  map[string]string
		version string
		want    []patchOp
	}{
		"set on a selector": {labels: map[string]string{"app": "x"}, version: "v1", want: []patchOp{{Op: "add", Path: "/spec/selector/version", Value: "v1"}}},
		"already set":       {labels: map[string]string{"app": "x", "version": "v1"}, version: "v1"},
		"change":            {labels: map[string]string{"version": "v1"}, version: "v2", want: []patchOp{{Op: "add", Path: "/spec/selector/version", Value: "v2"}}},
		"remove":            {labels: map[string]string{"version": "v1"}, version: "", want: []patchOp{{Op: "remove", Path: "/spec/selector/version"}}},
		"nil map":           {version: "v1", want: []patchOp{{Op: "add", Path: "/spec/selector", Value: map[string]string{"version": "v1"}}}},
		"nothing to remove": {labels: map[string]string{"app": "x"}, version: ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, labelPatch("/spec/selector", tc.labels, "version", tc.version)); diff != "" {
				t.Errorf("(-want,+got):\n%s", diff)
			}
		})
	}
}
