package routes

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/go-openapi/jsonpointer"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/internal/api"
)

// Istio routes a release through a VirtualService's named http routes (the
// weights of their stable and canary destinations) and a DestinationRule's
// stable and canary subsets (their version label).
type Istio struct {
	reader     client.Reader
	client     client.Client
	namespace  string
	versionKey string
	cfg        api.IstioRouting
}

var _ Router = (*Istio)(nil)

// NewIstio returns a Router for the Istio objects cfg names in namespace;
// versionKey is the pod label the subsets select versions by. Reads go
// through reader, which should be uncached: a decision to relabel a subset
// must never rest on a stale weight.
func NewIstio(reader client.Reader, c client.Client, namespace, versionKey string, cfg api.IstioRouting) *Istio {
	return &Istio{reader: reader, client: c, namespace: namespace, versionKey: versionKey, cfg: cfg}
}

// Observe implements Router.
func (r *Istio) Observe(ctx context.Context) (Split, error) {
	dr, vs, err := r.get(ctx)
	if err != nil {
		return Split{}, err
	}
	stable, canary, err := subsetVersions(dr, r.cfg, r.versionKey)
	if err != nil {
		return Split{}, err
	}
	weight, err := canaryWeight(vs, r.cfg)
	if err != nil {
		return Split{}, err
	}
	return Split{StableVersion: stable, CanaryVersion: canary, CanaryWeight: weight}, nil
}

// Ensure implements Router.
func (r *Istio) Ensure(ctx context.Context, want Split) (bool, error) {
	wrote := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		wrote = false
		dr, vs, err := r.get(ctx)
		if err != nil {
			return err
		}
		ops, err := subsetPatch(dr, r.cfg, r.versionKey, want)
		if err != nil {
			return err
		}
		if err := r.patch(ctx, dr, ops); err != nil {
			return fmt.Errorf("patch destinationrule %s: %w", dr.Name, err)
		}
		wrote = len(ops) > 0
		ops, err = weightPatch(vs, r.cfg, want.CanaryWeight)
		if err != nil {
			return err
		}
		if err := r.patch(ctx, vs, ops); err != nil {
			return fmt.Errorf("patch virtualservice %s: %w", vs.Name, err)
		}
		wrote = wrote || len(ops) > 0
		return nil
	})
	return wrote, err
}

func (r *Istio) get(ctx context.Context) (*networkingv1.DestinationRule, *networkingv1.VirtualService, error) {
	dr := &networkingv1.DestinationRule{}
	if err := r.reader.Get(ctx, types.NamespacedName{Namespace: r.namespace, Name: r.cfg.DestinationRule}, dr); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("DestinationRule %s/%s not found: %w", r.namespace, r.cfg.DestinationRule, ErrMissing)
		}
		return nil, nil, fmt.Errorf("get destinationrule %s: %w", r.cfg.DestinationRule, err)
	}
	vs := &networkingv1.VirtualService{}
	if err := r.reader.Get(ctx, types.NamespacedName{Namespace: r.namespace, Name: r.cfg.VirtualService}, vs); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("VirtualService %s/%s not found: %w", r.namespace, r.cfg.VirtualService, ErrMissing)
		}
		return nil, nil, fmt.Errorf("get virtualservice %s: %w", r.cfg.VirtualService, err)
	}
	return dr, vs, nil
}

// patch applies RFC 6902 ops, with the object's resourceVersion as a
// precondition so a concurrent writer makes it fail with a conflict instead
// of being overwritten.
func (r *Istio) patch(ctx context.Context, obj client.Object, ops []patchOp) error {
	if len(ops) == 0 {
		return nil
	}
	ops = append(ops, patchOp{Op: "replace", Path: "/metadata/resourceVersion", Value: obj.GetResourceVersion()})
	data, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	return r.client.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, data))
}

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

func subsetIndexes(dr *networkingv1.DestinationRule, cfg api.IstioRouting) (stable, canary int, err error) {
	stable, canary = -1, -1
	for i, s := range dr.Spec.Subsets {
		switch s.GetName() {
		case cfg.StableSubset:
			stable = i
		case cfg.CanarySubset:
			canary = i
		}
	}
	for _, m := range []struct {
		idx  int
		name string
	}{{stable, cfg.StableSubset}, {canary, cfg.CanarySubset}} {
		if m.idx < 0 {
			return 0, 0, fmt.Errorf("DestinationRule %s has no subset %q: add it with the labels shared by all pods of the Deployment: %w", dr.Name, m.name, ErrMissing)
		}
	}
	return stable, canary, nil
}

func subsetVersions(dr *networkingv1.DestinationRule, cfg api.IstioRouting, key string) (stable, canary string, err error) {
	si, ci, err := subsetIndexes(dr, cfg)
	if err != nil {
		return "", "", err
	}
	return dr.Spec.Subsets[si].GetLabels()[key], dr.Spec.Subsets[ci].GetLabels()[key], nil
}

// subsetPatch returns the ops that make the two subsets select want's
// versions by the version label alone; their other labels stay.
func subsetPatch(dr *networkingv1.DestinationRule, cfg api.IstioRouting, key string, want Split) ([]patchOp, error) {
	si, ci, err := subsetIndexes(dr, cfg)
	if err != nil {
		return nil, err
	}
	var ops []patchOp
	for _, s := range []struct {
		idx     int
		version string
	}{{si, want.StableVersion}, {ci, want.CanaryVersion}} {
		labels := dr.Spec.Subsets[s.idx].GetLabels()
		cur, has := labels[key]
		base := fmt.Sprintf("/spec/subsets/%d/labels", s.idx)
		switch {
		case s.version == "" && has:
			ops = append(ops, patchOp{Op: "remove", Path: base + "/" + jsonpointer.Escape(key)})
		case s.version == "" || (has && cur == s.version):
		case labels == nil:
			ops = append(ops, patchOp{Op: "add", Path: base, Value: map[string]string{key: s.version}})
		default:
			ops = append(ops, patchOp{Op: "add", Path: base + "/" + jsonpointer.Escape(key), Value: s.version})
		}
	}
	return ops, nil
}

// destination is the position of one weighted destination of a named route.
type destination struct {
	route, dest int
	canary      bool
	weight      int32
}

func destinations(vs *networkingv1.VirtualService, cfg api.IstioRouting) ([]destination, error) {
	var out []destination
	for _, name := range cfg.Routes {
		ri := -1
		for i, h := range vs.Spec.Http {
			if h.GetName() == name {
				ri = i
				break
			}
		}
		if ri < 0 {
			return nil, fmt.Errorf("VirtualService %s has no http route named %q: %w", vs.Name, name, ErrMissing)
		}
		found := map[bool]bool{}
		for di, d := range vs.Spec.Http[ri].GetRoute() {
			subset := d.GetDestination().GetSubset()
			if subset != cfg.StableSubset && subset != cfg.CanarySubset {
				continue
			}
			canary := subset == cfg.CanarySubset
			found[canary] = true
			out = append(out, destination{route: ri, dest: di, canary: canary, weight: d.GetWeight()})
		}
		for _, canary := range []bool{false, true} {
			if !found[canary] {
				subset := cfg.StableSubset
				if canary {
					subset = cfg.CanarySubset
				}
				return nil, fmt.Errorf("http route %q of VirtualService %s has no destination with subset %q: add one (canary with weight 0): %w", name, vs.Name, subset, ErrMissing)
			}
		}
	}
	return out, nil
}

func canaryWeight(vs *networkingv1.VirtualService, cfg api.IstioRouting) (int32, error) {
	ds, err := destinations(vs, cfg)
	if err != nil {
		return 0, err
	}
	var w int32
	for _, d := range ds {
		if d.canary && d.weight > w {
			w = d.weight
		}
	}
	return w, nil
}

// weightPatch returns the ops that give every managed route weight to the
// canary and 100-weight to stable. Nothing else of the route changes.
func weightPatch(vs *networkingv1.VirtualService, cfg api.IstioRouting, weight int32) ([]patchOp, error) {
	ds, err := destinations(vs, cfg)
	if err != nil {
		return nil, err
	}
	var ops []patchOp
	for _, d := range ds {
		want := 100 - weight
		if d.canary {
			want = weight
		}
		if d.weight != want {
			ops = append(ops, patchOp{Op: "add", Path: fmt.Sprintf("/spec/http/%d/route/%d/weight", d.route, d.dest), Value: want})
		}
	}
	return ops, nil
}
