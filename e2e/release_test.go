package e2e

// Given/When/Then helpers for vane's releases on the real local cluster.

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/api"
)

// app is the seed's dubbo3-provider in a namespace of its own: a plain
// opted-in Deployment, its Service, VirtualService and DestinationRule.
type app struct {
	t    *testing.T
	c    *framework.Cluster
	ns   string
	name string
	// mesh names the VirtualService, its weighted route and the
	// DestinationRule; the seed's when zero.
	mesh meshNames
}

// meshNames are the names of an app's Istio objects.
type meshNames struct{ vs, route, dr string }

func (a *app) names() meshNames {
	if a.mesh == (meshNames{}) {
		return meshNames{vs: "provider", route: "test-v1", dr: "dubbo-provider"}
	}
	return a.mesh
}

const seedRouting = `trafficRouting:
  istio:
    virtualService: {name: provider, routes: [test-v1]}
    destinationRule: {name: dubbo-provider, stableSubsetName: stable, canarySubsetName: canary}
`

// providerYAML is the Deployment of the seed with the given steps.
func providerYAML(ns string, replicas int, steps string) string {
	return providerWith(ns, replicas, seedRouting, steps)
}

// providerWith is the Deployment of the seed with the given routing and
// steps.
func providerWith(ns string, replicas int, routing, steps string) string {
	strategy := "canary:\n" + indent(routing+"steps:\n"+steps, "  ")
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: dubbo3-provider
  namespace: %s
  labels: {app: dubbo3-provider, vane.io/canary: enabled}
  annotations:
    vane.io/strategy: |
%s
spec:
  replicas: %d
  selector: {matchLabels: {app: dubbo3-provider}}
  template:
    metadata:
      labels: {app: dubbo3-provider, version: v1}
    spec:
      containers:
      - name: container-1
        image: release-ci.daocloud.io/mspider/spring-dubbo3-provider:v0.2
`, ns, indent(strategy, "      "), replicas)
}

// meshYAML is the seed's VirtualService (v1beta1, as users still apply it)
// and DestinationRule, with fields vane does not own that must survive.
func meshYAML(ns string) (vs, dr string) {
	vs = fmt.Sprintf(`apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: provider, namespace: %s}
spec:
  gateways: [mesh]
  hosts: [dubbo3-provider]
  http:
  - name: lane-test
    match: [{headers: {lane: {exact: test}}}]
    route: [{destination: {host: dubbo3-provider, subset: stable}}]
  - name: test-v1
    retries: {attempts: 3, perTryTimeout: 2s}
    timeout: 10s
    route:
    - destination: {host: dubbo3-provider, port: {number: 20880}, subset: stable}
      weight: 100
    - destination: {host: dubbo3-provider, port: {number: 20880}, subset: canary}
      weight: 0
`, ns)
	dr = fmt.Sprintf(`apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: dubbo-provider, namespace: %s}
spec:
  host: dubbo3-provider
  subsets:
  - {name: stable, labels: {app: dubbo3-provider}}
  - {name: canary, labels: {app: dubbo3-provider}}
  trafficPolicy: {connectionPool: {http: {http2MaxRequests: 10000}}}
`, ns)
	return vs, dr
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}

// givenApp deploys the seed app with steps and waits until v1 is available.
func givenApp(t *testing.T, replicas int, steps string) *app {
	t.Helper()
	c := framework.Vane(t)
	a := &app{t: t, c: c, ns: c.Namespace(t), name: "dubbo3-provider"}
	vs, dr := meshYAML(a.ns)
	a.apply(vs)
	a.apply(dr)
	a.apply(providerYAML(a.ns, replicas, steps))
	a.waitAvailable("v1")
	a.waitAdopted("v1")
	return a
}

// waitAdopted waits until vane has recorded the rolled-out version as
// stable (status Healthy), which lets it catch an unheld version change.
func (a *app) waitAdopted(v string) {
	a.t.Helper()
	framework.WaitFor(a.t, 30*time.Second, "vane to record stable "+v, func(ctx context.Context) (bool, error) {
		st, err := api.StatusFrom(a.deployment().Annotations)
		return err == nil && st != nil && st.Phase == api.PhaseHealthy && st.StableVersion == v, nil
	})
}

// apply creates an object from YAML.
func (a *app) apply(manifest string) {
	a.t.Helper()
	if err := a.create(manifest); err != nil {
		a.t.Fatalf("create: %v\n%s", err, manifest)
	}
}

// create sends the manifest as written (apiVersion included, v1beta1 for
// the Istio objects as in the seed).
func (a *app) create(manifest string) error {
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		return err
	}
	return a.c.Client.Create(context.Background(), u)
}

func (a *app) key(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: a.ns, Name: name}
}

func (a *app) deployment() *appsv1.Deployment {
	a.t.Helper()
	d := &appsv1.Deployment{}
	if err := a.c.Client.Get(context.Background(), a.key(a.name), d); err != nil {
		a.t.Fatalf("get deployment: %v", err)
	}
	return d
}

func (a *app) status() api.Status {
	a.t.Helper()
	st, err := api.StatusFrom(a.deployment().Annotations)
	if err != nil || st == nil {
		a.t.Fatalf("status annotation: %v, %v", st, err)
	}
	return *st
}

func (a *app) virtualService() *istionetworkingv1.VirtualService {
	a.t.Helper()
	vs := &istionetworkingv1.VirtualService{}
	if err := a.c.Client.Get(context.Background(), a.key(a.names().vs), vs); err != nil {
		a.t.Fatalf("get virtualservice: %v", err)
	}
	return vs
}

// versionEdit is the JSON patch `kubectl edit` sends for a version bump; v1
// is the seed's original template (image tag v0.2).
func versionEdit(v string) []byte {
	tag := v
	if v == "v1" {
		tag = "v0.2"
	}
	return []byte(fmt.Sprintf(`[{"op":"replace","path":"/spec/template/metadata/labels/version","value":%q},
{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"release-ci.daocloud.io/mspider/spring-dubbo3-provider:%s"}]`, v, tag))
}

// whenAction sets the one-shot action annotation, as kubectl annotate would.
func (a *app) whenAction(action api.Action) time.Time {
	a.t.Helper()
	d := &appsv1.Deployment{}
	d.Namespace, d.Name = a.ns, a.name
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, api.AnnotationAction, action)
	at := time.Now()
	if err := a.c.Client.Patch(context.Background(), d, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		a.t.Fatalf("annotate %s: %v", action, err)
	}
	return at
}

// canary returns the canary Deployment (nil when there is none).
func (a *app) canary() *appsv1.Deployment {
	a.t.Helper()
	c := &appsv1.Deployment{}
	if err := a.c.Client.Get(context.Background(), a.key(a.name+"-canary"), c); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		a.t.Fatal(err)
	}
	return c
}

// whenVersionEdited changes the pod template's version as a user would.
func (a *app) whenVersionEdited(v string) {
	a.t.Helper()
	d := &appsv1.Deployment{}
	d.Namespace, d.Name = a.ns, a.name
	if err := a.c.Client.Patch(context.Background(), d, client.RawPatch(types.JSONPatchType, versionEdit(v))); err != nil {
		a.t.Fatalf("edit version to %s: %v", v, err)
	}
}

// waitPhase waits for the release to reach phase.
func (a *app) waitPhase(phase api.Phase, timeout time.Duration) api.Status {
	a.t.Helper()
	var st api.Status
	framework.WaitFor(a.t, timeout, "phase "+string(phase), func(ctx context.Context) (bool, error) {
		st = a.status()
		return st.Phase == phase, nil
	})
	return st
}

// waitAvailable waits until every replica of the Deployment runs version v.
func (a *app) waitAvailable(v string) {
	a.t.Helper()
	framework.WaitFor(a.t, 60*time.Second, "deployment available on "+v, func(ctx context.Context) (bool, error) {
		d := a.deployment()
		want := *d.Spec.Replicas
		s := d.Status
		return !d.Spec.Paused && d.Spec.Template.Labels["version"] == v && s.ObservedGeneration >= d.Generation &&
			s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want, nil
	})
}

// canaryGone reports whether the canary Deployment no longer exists.
func (a *app) canaryGone() bool {
	err := a.c.Client.Get(context.Background(), a.key(a.name+"-canary"), &appsv1.Deployment{})
	return apierrors.IsNotFound(err)
}

// observation is one look at the traffic: weights, subsets and ready pods.
type observation struct {
	// at is when the status was read; since, when the look before read
	// it: a change first seen at at happened in (since, at].
	at, since      time.Time
	step           int32
	phase          api.Phase
	stableWeight   int32
	canaryWeight   int32
	stableSubset   map[string]string
	canarySubset   map[string]string
	stableReady    int
	canaryReady    int
	canaryReplicas int32 // -1: no canary Deployment
	headerRoutes   []string
}

func (o observation) routes() string {
	return fmt.Sprintf("stable%v=%d canary%v=%d headers%v", o.stableSubset, o.stableWeight, o.canarySubset, o.canaryWeight, o.headerRoutes)
}

// recorder watches a release every 20ms and checks, at every observed route
// change, that no weight points at a subset without Ready pods.
type recorder struct {
	a    *app
	mu   sync.Mutex
	obs  []observation
	errs []string
	stop chan struct{}
	done chan struct{}
}

func (a *app) record() *recorder {
	r := &recorder{a: a, stop: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	a.t.Cleanup(r.halt)
	return r
}

func (r *recorder) halt() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

// history stops the recorder and returns what it saw; it fails the test on
// any invariant violation.
func (r *recorder) history() []observation {
	r.a.t.Helper()
	r.halt()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		r.a.t.Error(e)
	}
	return r.obs
}

func (r *recorder) loop() {
	defer close(r.done)
	var last time.Time
	for {
		if o, err := r.look(context.Background()); err == nil {
			o.since, last = last, o.at
			if o.since.IsZero() {
				o.since = o.at
			}
			r.mu.Lock()
			if n := len(r.obs); n == 0 || r.obs[n-1].routes() != o.routes() || r.obs[n-1].step != o.step || r.obs[n-1].phase != o.phase || r.obs[n-1].canaryReplicas != o.canaryReplicas {
				r.obs = append(r.obs, o)
				if n == 0 || r.obs[n-1].routes() != o.routes() {
					r.check(o)
				}
			}
			r.mu.Unlock()
		}
		select {
		case <-r.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// check is the invariant: a route with weight > 0 never points at a subset
// with no Ready pods.
func (r *recorder) check(o observation) {
	if o.canaryWeight > 0 && o.canaryReady == 0 {
		r.errs = append(r.errs, fmt.Sprintf("%s: canary weight %d on subset %v with no Ready pods", o.at.Format("15:04:05.000"), o.canaryWeight, o.canarySubset))
	}
	if len(o.headerRoutes) > 0 && o.canaryReady == 0 {
		r.errs = append(r.errs, fmt.Sprintf("%s: header routes %v to subset %v with no Ready pods", o.at.Format("15:04:05.000"), o.headerRoutes, o.canarySubset))
	}
	if o.stableWeight > 0 && o.stableReady == 0 {
		r.errs = append(r.errs, fmt.Sprintf("%s: stable weight %d on subset %v with no Ready pods", o.at.Format("15:04:05.000"), o.stableWeight, o.stableSubset))
	}
}

// look lists the pods, reads the routes, then lists the pods again, and
// counts a subset's Ready pods in the listing that has more. A weight is
// only ever written after its pods are Ready, so the listing after it must
// include them; and a canary is removed only after its weight went to 0, so
// a weight still read must find its pods in the listing before it (vane may
// lower the weight and remove the canary between the route read and the
// second listing).
func (r *recorder) look(ctx context.Context) (observation, error) {
	a := r.a
	o := observation{canaryReplicas: -1}
	vs := &istionetworkingv1.VirtualService{}
	dr := &istionetworkingv1.DestinationRule{}
	// The canary's size first: vane resizes it only after persisting the
	// step that asks for it, so a size read before the status is never ahead
	// of the step read with it.
	c := &appsv1.Deployment{}
	if err := a.c.Client.Get(ctx, a.key(a.name+"-canary"), c); err == nil {
		o.canaryReplicas = *c.Spec.Replicas
	}
	d := &appsv1.Deployment{}
	if err := a.c.Client.Get(ctx, a.key(a.name), d); err != nil {
		return o, err
	}
	o.at = time.Now()
	if st, _ := api.StatusFrom(d.Annotations); st != nil {
		o.step, o.phase = st.CurrentStepIndex, st.Phase
	}
	var before, after corev1.PodList
	if err := a.c.Client.List(ctx, &before, client.InNamespace(a.ns)); err != nil {
		return o, err
	}
	if err := a.c.Client.Get(ctx, a.key(a.names().vs), vs); err != nil {
		return o, err
	}
	if err := a.c.Client.Get(ctx, a.key(a.names().dr), dr); err != nil {
		return o, err
	}
	for _, h := range vs.Spec.Http {
		if h.Name == "lane" {
			o.headerRoutes = append(o.headerRoutes, h.Name)
		}
		if h.Name != a.names().route {
			continue
		}
		for _, d := range h.Route {
			switch d.Destination.Subset {
			case "stable":
				o.stableWeight = d.Weight
			case "canary":
				o.canaryWeight = d.Weight
			}
		}
	}
	for _, s := range dr.Spec.Subsets {
		switch s.Name {
		case "stable":
			o.stableSubset = s.Labels
		case "canary":
			o.canarySubset = s.Labels
		}
	}
	if err := a.c.Client.List(ctx, &after, client.InNamespace(a.ns)); err != nil {
		return o, err
	}
	stableBefore, canaryBefore := readyIn(&before, o.stableSubset, o.canarySubset)
	o.stableReady, o.canaryReady = readyIn(&after, o.stableSubset, o.canarySubset)
	o.stableReady, o.canaryReady = max(o.stableReady, stableBefore), max(o.canaryReady, canaryBefore)
	return o, nil
}

// readyIn counts the Ready pods of pods that the stable and the canary
// subset select.
func readyIn(pods *corev1.PodList, stableSubset, canarySubset map[string]string) (stable, canary int) {
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || !podReady(&p) {
			continue
		}
		if labels.SelectorFromSet(stableSubset).Matches(labels.Set(p.Labels)) {
			stable++
		}
		if labels.SelectorFromSet(canarySubset).Matches(labels.Set(p.Labels)) {
			canary++
		}
	}
	return stable, canary
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// events returns the reasons and messages of the Events on the Deployment.
func (a *app) events() []string {
	a.t.Helper()
	var list corev1.EventList
	if err := a.c.Client.List(context.Background(), &list, client.InNamespace(a.ns)); err != nil {
		a.t.Fatal(err)
	}
	sort.SliceStable(list.Items, func(i, j int) bool {
		return eventTime(&list.Items[i]).Before(eventTime(&list.Items[j]))
	})
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "Deployment" && e.InvolvedObject.Name == a.name && e.Reason != "ScalingReplicaSet" {
			out = append(out, e.Reason+": "+e.Message)
		}
	}
	return out
}

func eventTime(e *corev1.Event) time.Time {
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	return e.FirstTimestamp.Time
}

// replicaSets lists the names of the Deployment's own ReplicaSets.
func (a *app) replicaSets() []string {
	a.t.Helper()
	var list appsv1.ReplicaSetList
	if err := a.c.Client.List(context.Background(), &list, client.InNamespace(a.ns)); err != nil {
		a.t.Fatal(err)
	}
	var out []string
	for _, rs := range list.Items {
		if ref := metav1.GetControllerOf(&rs); ref != nil && ref.Name == a.name {
			out = append(out, rs.Name)
		}
	}
	sort.Strings(out)
	return out
}

func toUnstructured(t *testing.T, obj any) map[string]any {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// update changes the Deployment as a client with a read-modify-write would,
// retrying on conflicts with the controllers' own writes.
func (a *app) update(change func(d *appsv1.Deployment)) {
	a.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := a.deployment()
		change(d)
		return a.c.Client.Update(context.Background(), d)
	})
	if err != nil {
		a.t.Fatal(err)
	}
}

// canaryWeights is the sequence of distinct canary weights a recorder saw.
func canaryWeights(hist []observation) []int32 {
	var out []int32
	for _, o := range hist {
		if len(out) == 0 || out[len(out)-1] != o.canaryWeight {
			out = append(out, o.canaryWeight)
		}
	}
	return out
}

// shiftedWeights is the sequence of canary weights vane wrote, from its
// TrafficShifted events (complete, where a poller may miss a short step).
func (a *app) shiftedWeights() []int32 {
	a.t.Helper()
	var out []int32
	for _, e := range a.events() {
		var v string
		var w int32
		if _, err := fmt.Sscanf(e, "TrafficShifted: canary %s weight %d%%", &v, &w); err != nil {
			continue
		}
		if len(out) == 0 || out[len(out)-1] != w {
			out = append(out, w)
		}
	}
	return out
}

// observeNow looks at the routes and pods now (a recorder's last sample may
// be up to a poll old).
func (a *app) observeNow() observation {
	a.t.Helper()
	o, err := (&recorder{a: a}).look(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	return o
}
