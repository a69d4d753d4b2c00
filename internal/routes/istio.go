package routes

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/go-openapi/jsonpointer"
	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/internal/api"
)

// Istio routes a release through a VirtualService: the weights of the stable
// and canary destinations of its named http routes, and managed header
// routes placed before them. Stable and canary are told apart by
// DestinationRule subsets, or by the hosts of two Services; vane sets the
// version label of the subsets' labels and of the Services' selectors.
type Istio struct {
	reader     client.Reader
	client     client.Client
	namespace  string
	versionKey string
	cfg        api.IstioRouting
	// dr and vs are the objects as last read or written, nil when unknown:
	// Ensure starts from what Observe read instead of reading again. Each
	// write carries the object's resourceVersion, so one changed meanwhile
	// fails with a conflict, and the retry reads it afresh.
	dr *networkingv1.DestinationRule
	vs *networkingv1.VirtualService
}

var _ Router = (*Istio)(nil)

// NewIstio returns a Router for the Istio objects cfg names in namespace;
// versionKey is the pod label the pools select versions by. Reads go
// through reader, which should be uncached: a decision to relabel a pool
// must never rest on a stale weight.
func NewIstio(reader client.Reader, c client.Client, namespace, versionKey string, cfg api.IstioRouting) *Istio {
	return &Istio{reader: reader, client: c, namespace: namespace, versionKey: versionKey, cfg: cfg}
}

// Observe implements Router.
func (r *Istio) Observe(ctx context.Context) (Split, error) {
	var split Split
	var err error
	r.dr, r.vs = nil, nil
	if r.cfg.BySubset() {
		var dr *networkingv1.DestinationRule
		if dr, err = r.destinationRule(ctx); err == nil {
			split.StableVersion, split.CanaryVersion, err = subsetVersions(dr, r.cfg, r.versionKey)
		}
	} else {
		split.StableVersion, split.CanaryVersion, err = r.serviceVersions(ctx)
	}
	if err != nil {
		return Split{}, err
	}
	vs, err := r.virtualService(ctx)
	if err != nil {
		return Split{}, err
	}
	if split.CanaryWeight, err = canaryWeight(vs, r.cfg); err != nil {
		return Split{}, err
	}
	split.HeaderRoutes = headerRoutes(vs, r.cfg)
	return split, nil
}

// Ensure implements Router.
func (r *Istio) Ensure(ctx context.Context, want Split) (bool, error) {
	wrote := false
	for _, step := range []func(context.Context, Split) (bool, error){r.ensureSubsets, r.ensureServices, r.ensureRoutes} {
		var w bool
		err := retry.RetryOnConflict(retry.DefaultRetry, func() (err error) {
			w, err = step(ctx, want)
			if err != nil {
				// Read again before a retry: the copy at hand is outdated.
				r.dr, r.vs = nil, nil
			}
			return err
		})
		if err != nil {
			return wrote, err
		}
		wrote = wrote || w
	}
	return wrote, nil
}

// destinationRule returns the DestinationRule as last read or written,
// reading it (uncached) when there is none.
func (r *Istio) destinationRule(ctx context.Context) (*networkingv1.DestinationRule, error) {
	return current(ctx, r, "DestinationRule", r.cfg.DestinationRule, &r.dr)
}

// virtualService returns the VirtualService as last read or written,
// reading it (uncached) when there is none.
func (r *Istio) virtualService(ctx context.Context) (*networkingv1.VirtualService, error) {
	return current(ctx, r, "VirtualService", r.cfg.VirtualService, &r.vs)
}

// current returns *slot, reading the object into it first when it is nil.
func current[T any, P interface {
	*T
	client.Object
}](ctx context.Context, r *Istio, kind, name string, slot *P) (P, error) {
	if *slot == nil {
		obj := P(new(T))
		if err := r.get(ctx, kind, name, obj); err != nil {
			return nil, err
		}
		*slot = obj
	}
	return *slot, nil
}

func (r *Istio) ensureSubsets(ctx context.Context, want Split) (bool, error) {
	if !r.cfg.BySubset() {
		return false, nil
	}
	dr, err := r.destinationRule(ctx)
	if err != nil {
		return false, err
	}
	ops, err := subsetPatch(dr, r.cfg, r.versionKey, want)
	if err != nil {
		return false, err
	}
	return r.patch(ctx, dr, ops)
}

// ensureServices pins the selectors of the stable and canary Services to
// their versions (when the strategy names them).
func (r *Istio) ensureServices(ctx context.Context, want Split) (bool, error) {
	if r.cfg.StableService == "" {
		return false, nil
	}
	wrote := false
	for _, s := range []struct{ name, version string }{{r.cfg.StableService, want.StableVersion}, {r.cfg.CanaryService, want.CanaryVersion}} {
		svc := &corev1.Service{}
		if err := r.get(ctx, "Service", s.name, svc); err != nil {
			return wrote, err
		}
		ops := labelPatch("/spec/selector", svc.Spec.Selector, r.versionKey, s.version)
		w, err := r.patch(ctx, svc, ops)
		if err != nil {
			return wrote, err
		}
		wrote = wrote || w
	}
	return wrote, nil
}

// ensureRoutes writes the weights and the managed header routes in one
// patch of the VirtualService. The weight ops come first and change no
// route's position, so the header route ops, computed on the same copy,
// still find theirs.
func (r *Istio) ensureRoutes(ctx context.Context, want Split) (bool, error) {
	vs, err := r.virtualService(ctx)
	if err != nil {
		return false, err
	}
	ops, err := weightPatch(vs, r.cfg, want.CanaryWeight)
	if err != nil {
		return false, err
	}
	headerOps, err := headerRoutePatch(vs, r.cfg, want.HeaderRoutes)
	if err != nil {
		return false, err
	}
	return r.patch(ctx, vs, append(ops, headerOps...))
}

func (r *Istio) serviceVersions(ctx context.Context) (stable, canary string, err error) {
	for _, s := range []struct {
		name string
		out  *string
	}{{r.cfg.StableService, &stable}, {r.cfg.CanaryService, &canary}} {
		svc := &corev1.Service{}
		if err := r.get(ctx, "Service", s.name, svc); err != nil {
			return "", "", err
		}
		*s.out = svc.Spec.Selector[r.versionKey]
	}
	return stable, canary, nil
}

func (r *Istio) get(ctx context.Context, kind, name string, obj client.Object) error {
	if err := r.reader.Get(ctx, types.NamespacedName{Namespace: r.namespace, Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%s %s/%s not found: %w", kind, r.namespace, name, ErrMissing)
		}
		return fmt.Errorf("get %s %s: %w", strings.ToLower(kind), name, err)
	}
	return nil
}

// patch applies RFC 6902 ops, with the object's resourceVersion as a
// precondition so a concurrent writer makes it fail with a conflict instead
// of being overwritten. It reports whether it wrote.
func (r *Istio) patch(ctx context.Context, obj client.Object, ops []patchOp) (bool, error) {
	if len(ops) == 0 {
		return false, nil
	}
	ops = append(ops, patchOp{Op: "replace", Path: "/metadata/resourceVersion", Value: obj.GetResourceVersion()})
	data, err := json.Marshal(ops)
	if err != nil {
		return false, err
	}
	if err := r.client.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, data)); err != nil {
		return false, fmt.Errorf("patch %s %s: %w", strings.ToLower(obj.GetObjectKind().GroupVersionKind().Kind), obj.GetName(), err)
	}
	return true, nil
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
		ops = append(ops, labelPatch(fmt.Sprintf("/spec/subsets/%d/labels", s.idx), dr.Spec.Subsets[s.idx].GetLabels(), key, s.version)...)
	}
	return ops, nil
}

// labelPatch returns the ops that set key to version in the label map at
// path ("" removes it); other labels stay.
func labelPatch(path string, labels map[string]string, key, version string) []patchOp {
	cur, has := labels[key]
	switch {
	case version == "" && has:
		return []patchOp{{Op: "remove", Path: path + "/" + jsonpointer.Escape(key)}}
	case version == "" || (has && cur == version):
		return nil
	case labels == nil:
		return []patchOp{{Op: "add", Path: path, Value: map[string]string{key: version}}}
	default:
		return []patchOp{{Op: "add", Path: path + "/" + jsonpointer.Escape(key), Value: version}}
	}
}

// destination is the position of one weighted destination of a named route.
type destination struct {
	route, dest int
	canary      bool
	weight      int32
}

// pool tells which pool a route destination sends to: by subset name, or
// by host (the Service's short name or any longer form of it).
func pool(d *networkingv1alpha3.Destination, cfg api.IstioRouting) (canary, ok bool) {
	if cfg.BySubset() {
		switch d.GetSubset() {
		case cfg.StableSubset:
			return false, true
		case cfg.CanarySubset:
			return true, true
		}
		return false, false
	}
	host := d.GetHost()
	switch {
	case host == cfg.StableService || strings.HasPrefix(host, cfg.StableService+"."):
		return false, true
	case host == cfg.CanaryService || strings.HasPrefix(host, cfg.CanaryService+"."):
		return true, true
	}
	return false, false
}

func poolName(canary bool, cfg api.IstioRouting) string {
	switch {
	case cfg.BySubset() && canary:
		return fmt.Sprintf("subset %q", cfg.CanarySubset)
	case cfg.BySubset():
		return fmt.Sprintf("subset %q", cfg.StableSubset)
	case canary:
		return fmt.Sprintf("host %q", cfg.CanaryService)
	default:
		return fmt.Sprintf("host %q", cfg.StableService)
	}
}

func routeIndex(vs *networkingv1.VirtualService, name string) int {
	return slices.IndexFunc(vs.Spec.Http, func(h *networkingv1alpha3.HTTPRoute) bool { return h.GetName() == name })
}

func destinations(vs *networkingv1.VirtualService, cfg api.IstioRouting) ([]destination, error) {
	var out []destination
	for _, name := range cfg.Routes {
		ri := routeIndex(vs, name)
		if ri < 0 {
			return nil, fmt.Errorf("VirtualService %s has no http route named %q: %w", vs.Name, name, ErrMissing)
		}
		found := map[bool]bool{}
		for di, d := range vs.Spec.Http[ri].GetRoute() {
			canary, ok := pool(d.GetDestination(), cfg)
			if !ok {
				continue
			}
			found[canary] = true
			out = append(out, destination{route: ri, dest: di, canary: canary, weight: d.GetWeight()})
		}
		for _, canary := range []bool{false, true} {
			if !found[canary] {
				return nil, fmt.Errorf("http route %q of VirtualService %s has no destination with %s: add one (canary with weight 0): %w", name, vs.Name, poolName(canary, cfg), ErrMissing)
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

// weightPatch returns the ops that give every weighted route weight to the
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

// canaryDestination is the canary destination of the first weighted route,
// which header routes send to.
func canaryDestination(vs *networkingv1.VirtualService, cfg api.IstioRouting) (*networkingv1alpha3.Destination, error) {
	ds, err := destinations(vs, cfg)
	if err != nil {
		return nil, err
	}
	for _, d := range ds {
		if d.canary {
			return vs.Spec.Http[d.route].Route[d.dest].Destination, nil
		}
	}
	return nil, fmt.Errorf("no canary destination in VirtualService %s: %w", vs.Name, ErrMissing)
}

// buildHeaderRoute is the http route a managed header route stands for.
func buildHeaderRoute(h api.HeaderRoute, dest *networkingv1alpha3.Destination) *networkingv1alpha3.HTTPRoute {
	headers := map[string]*networkingv1alpha3.StringMatch{}
	for _, m := range h.Match {
		switch {
		case m.Exact != "":
			headers[m.Name] = &networkingv1alpha3.StringMatch{MatchType: &networkingv1alpha3.StringMatch_Exact{Exact: m.Exact}}
		case m.Prefix != "":
			headers[m.Name] = &networkingv1alpha3.StringMatch{MatchType: &networkingv1alpha3.StringMatch_Prefix{Prefix: m.Prefix}}
		default:
			headers[m.Name] = &networkingv1alpha3.StringMatch{MatchType: &networkingv1alpha3.StringMatch_Regex{Regex: m.Regex}}
		}
	}
	return &networkingv1alpha3.HTTPRoute{
		Name:  h.Name,
		Match: []*networkingv1alpha3.HTTPMatchRequest{{Headers: headers}},
		Route: []*networkingv1alpha3.HTTPRouteDestination{{Destination: proto.Clone(dest).(*networkingv1alpha3.Destination)}},
	}
}

// headerRoutes reads the managed routes present in the VirtualService, in
// the order they appear, their header matches sorted by name.
func headerRoutes(vs *networkingv1.VirtualService, cfg api.IstioRouting) []api.HeaderRoute {
	var out []api.HeaderRoute
	for _, h := range vs.Spec.Http {
		if !slices.Contains(cfg.ManagedRoutes, h.GetName()) {
			continue
		}
		hr := api.HeaderRoute{Name: h.GetName()}
		for _, m := range h.GetMatch() {
			for name, v := range m.GetHeaders() {
				hr.Match = append(hr.Match, api.HeaderMatch{Name: name, Exact: v.GetExact(), Prefix: v.GetPrefix(), Regex: v.GetRegex()})
			}
		}
		slices.SortFunc(hr.Match, func(a, b api.HeaderMatch) int { return strings.Compare(a.Name, b.Name) })
		out = append(out, hr)
	}
	return out
}

// headerRoutePatch returns the ops that make the managed routes exactly
// want: routes that differ or are no longer wanted are removed, missing ones
// inserted right before the first weighted route, in managedRoutes order.
// Routes vane does not manage are never touched.
func headerRoutePatch(vs *networkingv1.VirtualService, cfg api.IstioRouting, want []api.HeaderRoute) ([]patchOp, error) {
	wanted := map[string]*networkingv1alpha3.HTTPRoute{}
	if len(want) > 0 {
		dest, err := canaryDestination(vs, cfg)
		if err != nil {
			return nil, err
		}
		for _, h := range want {
			wanted[h.Name] = buildHeaderRoute(h, dest)
		}
	}
	names := make([]string, len(vs.Spec.Http))
	for i, h := range vs.Spec.Http {
		names[i] = h.GetName()
	}
	var ops []patchOp
	for i := len(vs.Spec.Http) - 1; i >= 0; i-- {
		h := vs.Spec.Http[i]
		if !slices.Contains(cfg.ManagedRoutes, h.GetName()) {
			continue
		}
		if w, ok := wanted[h.GetName()]; ok && proto.Equal(w, h) {
			continue
		}
		ops = append(ops, patchOp{Op: "remove", Path: fmt.Sprintf("/spec/http/%d", i)})
		names = slices.Delete(names, i, i+1)
	}
	for _, name := range cfg.ManagedRoutes {
		w, ok := wanted[name]
		if !ok || slices.Contains(names, name) {
			continue
		}
		at := slices.IndexFunc(names, func(n string) bool { return slices.Contains(cfg.Routes, n) })
		if at < 0 {
			return nil, fmt.Errorf("VirtualService %s has none of the routes %v: %w", vs.Name, cfg.Routes, ErrMissing)
		}
		raw, err := json.Marshal(w)
		if err != nil {
			return nil, err
		}
		ops = append(ops, patchOp{Op: "add", Path: fmt.Sprintf("/spec/http/%d", at), Value: json.RawMessage(raw)})
		names = slices.Insert(names, at, name)
	}
	return ops, nil
}
