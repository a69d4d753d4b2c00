package e2e

// Releases across clusters: a second control plane (member "b") registered
// with vane through a remote Secret, as `istioctl create-remote-secret`
// writes them; the mesh objects live in vane's own cluster ("primary").

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/api"
)

// fleet is the seed app in vane's cluster (p) and in member b: the same
// opted-in Deployment, namespace and name, each changed by its own sync.
type fleet struct {
	t    *testing.T
	p, b *app
	m    *framework.Cluster
}

// givenFleet registers member b and deploys the seed app in both clusters,
// the mesh objects in vane's cluster only.
func givenFleet(t *testing.T, replicas int, steps string) *fleet {
	t.Helper()
	c := framework.Vane(t)
	m := framework.StartMember(t, "b")
	framework.AddMember(t, m)
	ns := c.Namespace(t)
	sameNamespace(t, m, ns)
	f := &fleet{t: t, m: m,
		p: &app{t: t, c: c, ns: ns, name: "dubbo3-provider"},
		b: &app{t: t, c: m, ns: ns, name: "dubbo3-provider"},
	}
	vs, dr := meshYAML(ns)
	f.p.apply(vs)
	f.p.apply(dr)
	for _, a := range f.both() {
		a.apply(providerYAML(ns, replicas, steps))
	}
	for _, a := range f.both() {
		a.waitAvailable("v1")
		a.waitAdopted("v1")
	}
	return f
}

func (f *fleet) both() []*app { return []*app{f.p, f.b} }

// syncedToPause edits the version in both clusters and waits for the
// release's first indefinite pause.
func (f *fleet) syncedToPause(v string) {
	f.t.Helper()
	for _, a := range f.both() {
		a.whenVersionEdited(v)
	}
	f.p.waitPhase(api.PhasePaused, 60*time.Second)
}

// sameNamespace creates namespace ns in cluster m too, deleted at the end.
func sameNamespace(t *testing.T, m *framework.Cluster, ns string) {
	t.Helper()
	ctx := context.Background()
	if _, err := m.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Clientset.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	framework.WaitFor(t, 30*time.Second, "default ServiceAccount in member "+ns, func(ctx context.Context) (bool, error) {
		_, err := m.Clientset.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// cordon makes every node of cluster c unschedulable (new pods stay
// Pending) until the returned func or the test's end undoes it.
func cordon(t *testing.T, c *framework.Cluster) func() {
	t.Helper()
	set := func(v bool) {
		nodes, err := c.Clientset.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		for _, n := range nodes.Items {
			patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, v)
			if _, err := c.Clientset.CoreV1().Nodes().Patch(context.Background(), n.Name, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Error(err)
			}
		}
	}
	set(true)
	done := false
	undo := func() {
		if !done {
			done = true
			set(false)
		}
	}
	t.Cleanup(undo)
	return undo
}

// statusIn reads the release status of a (zero when none).
func statusIn(a *app) api.Status {
	st, _ := api.StatusFrom(a.deployment().Annotations)
	if st == nil {
		return api.Status{}
	}
	return *st
}

// members lists the clusters a status shows.
func members(st api.Status) []string {
	var out []string
	for _, m := range st.Members {
		out = append(out, m.Cluster)
	}
	return out
}

const fleetSteps = `- setWeight: 20
- pause: {}
- setWeight: 50
- pause: {duration: 2s}
`

// TestFleetRelease is one release of the same app in two clusters, each
// synced on its own: a cluster not yet synced holds the release and is
// named, no weight is written until the canaries of both clusters are
// ready, an action in either cluster acts on both, promotion unpauses both.
func TestFleetRelease(t *testing.T) {
	f := givenFleet(t, 2, fleetSteps)
	p, b := f.p, f.b

	// b syncs first: held, its canary created, no traffic moves, and the
	// release says it waits for the primary cluster.
	b.whenVersionEdited("v2")
	framework.WaitFor(t, 30*time.Second, "the release to wait for cluster primary", func(context.Context) (bool, error) {
		st := statusIn(p)
		return st.Phase == api.PhaseProgressing && strings.Contains(st.Message, "waiting for cluster primary: its Deployment runs version v1, not v2 yet"), nil
	})
	framework.WaitFor(t, 30*time.Second, "b's canary", func(context.Context) (bool, error) { return b.canary() != nil, nil })
	if !b.deployment().Spec.Paused || p.deployment().Spec.Paused {
		t.Fatalf("want b held and the primary untouched: b paused %t, primary paused %t", b.deployment().Spec.Paused, p.deployment().Spec.Paused)
	}
	if st := statusIn(b); !slices.Equal(members(st), []string{"primary", "b"}) {
		t.Errorf("status in b shows clusters %v, want [primary b]", members(st))
	}
	time.Sleep(2 * time.Second)
	if w := p.observeNow().canaryWeight; w != 0 {
		t.Fatalf("canary weight %d while cluster primary is not synced", w)
	}

	// The primary syncs while its nodes take no pods: its canary cannot be
	// ready, so still no weight, and the release names the primary.
	uncordon := cordon(t, p.c)
	p.whenVersionEdited("v2")
	framework.WaitFor(t, 30*time.Second, "the release to wait for the primary's canary", func(context.Context) (bool, error) {
		st := statusIn(b)
		return strings.Contains(st.Message, "waiting for cluster primary: waiting for 1 canary pods"), nil
	})
	if st := statusIn(p); st.CurrentStepIndex != 0 || !p.deployment().Spec.Paused {
		t.Fatalf("the primary joined the release at step %d (paused %t), want step 0, held", st.CurrentStepIndex, p.deployment().Spec.Paused)
	}
	time.Sleep(2 * time.Second)
	if w := p.observeNow().canaryWeight; w != 0 {
		t.Fatalf("canary weight %d while the primary's canary is not ready", w)
	}
	uncordon()
	framework.WaitFor(t, 60*time.Second, "weight 20 once both canaries are ready", func(context.Context) (bool, error) {
		return p.observeNow().canaryWeight == 20, nil
	})
	for _, a := range f.both() {
		if c := a.canary(); c == nil || c.Status.AvailableReplicas < 1 {
			t.Fatalf("weight 20 written while the canary in %s is not available: %+v", a.c.Name, c)
		}
	}

	// Paused: a promote set in b acts on the whole release.
	b.waitPhase(api.PhasePaused, 30*time.Second)
	b.whenAction(api.ActionPromote)
	framework.WaitFor(t, 30*time.Second, "the promote in b to end the pause everywhere", func(context.Context) (bool, error) {
		return statusIn(p).CurrentStepIndex >= 2, nil
	})
	if _, set := b.deployment().Annotations[api.AnnotationAction]; set {
		t.Error("the promote action is still set in b")
	}

	// 50, 2 s, then promotion: both clusters roll out v2 natively.
	for _, a := range f.both() {
		a.waitPhase(api.PhaseHealthy, 90*time.Second)
		a.waitAvailable("v2")
		framework.WaitFor(t, 30*time.Second, "canary removed in "+a.c.Name, func(context.Context) (bool, error) { return a.canaryGone(), nil })
	}
	o := p.observeNow()
	if o.canaryWeight != 0 || o.stableSubset["version"] != "v2" || o.canarySubset["version"] != "v2" {
		t.Errorf("final routes %s, want all on v2", o.routes())
	}
	if got := p.shiftedWeights(); !slices.Equal(got, []int32{0, 20, 50, 100, 0}) {
		t.Errorf("weights written (primary's events) %v, want [0 20 50 100 0]", got)
	}
	for _, a := range f.both() {
		if n := countReason(a.events(), "StepAdvanced"); n != 4 {
			t.Errorf("%d StepAdvanced Events in cluster %q, want 4: %v", n, a.c.Name, a.events())
		}
	}
}

func countReason(events []string, reason string) int {
	n := 0
	for _, e := range events {
		if strings.HasPrefix(e, reason+":") {
			n++
		}
	}
	return n
}

// TestMemberUnreachable: a member whose API server stops mid-release
// pauses the release as Degraded, naming it, and nothing moves in the other
// cluster; once it is back, the release resumes.
func TestMemberUnreachable(t *testing.T) {
	f := givenFleet(t, 1, fleetSteps)
	p, b := f.p, f.b
	f.syncedToPause("v2")
	before := p.observeNow()
	vsBefore := p.virtualService()

	f.m.StopAPIServer(t)
	p.whenAction(api.ActionPromote)
	st := p.waitPhase(api.PhaseDegraded, 30*time.Second)
	if !strings.Contains(st.Message, "cluster b is unreachable") {
		t.Errorf("degraded message %q, want it to name cluster b", st.Message)
	}
	time.Sleep(2 * time.Second)
	after := p.observeNow()
	if vs := p.virtualService(); vs.ResourceVersion != vsBefore.ResourceVersion {
		t.Errorf("the VirtualService changed while b was unreachable: %s → %s", before.routes(), after.routes())
	}
	if !p.deployment().Spec.Paused || after.canaryReplicas != before.canaryReplicas {
		t.Errorf("the primary's Deployment or canary changed while b was unreachable (paused %t, canary %d → %d)", p.deployment().Spec.Paused, before.canaryReplicas, after.canaryReplicas)
	}
	if _, set := p.deployment().Annotations[api.AnnotationAction]; !set {
		t.Error("the promote was consumed while b was unreachable")
	}
	if n, ok := scrape(t, `vane_member_unreachable_total\{cluster="b"\}`); !ok || n < 1 {
		t.Errorf("vane_member_unreachable_total{cluster=\"b\"} = %v (found %t), want ≥ 1", n, ok)
	}
	if n, ok := scrape(t, `vane_member_cluster\{cluster="b"\}`); !ok || n != 1 {
		t.Errorf("vane_member_cluster{cluster=\"b\"} = %v (found %t), want 1", n, ok)
	}

	f.m.StartAPIServer(t)
	framework.WaitFor(t, 90*time.Second, "the promote to apply once b is back", func(context.Context) (bool, error) {
		return statusIn(p).CurrentStepIndex >= 2, nil
	})
	for _, a := range []*app{p, b} {
		a.waitPhase(api.PhaseHealthy, 120*time.Second)
		a.waitAvailable("v2")
	}
}

// TestMemberDroppedAndAdded: deleting a member's remote Secret drops it
// from the release at once (the release goes on in the other cluster,
// nothing more is written in the dropped one); creating it again takes it
// back in, without a restart.
func TestMemberDroppedAndAdded(t *testing.T) {
	f := givenFleet(t, 1, fleetSteps)
	p, b := f.p, f.b
	f.syncedToPause("v2")
	if got := members(statusIn(p)); !slices.Equal(got, []string{"primary", "b"}) {
		t.Fatalf("status shows clusters %v, want [primary b]", got)
	}

	// With no member left the status lists no clusters, as in one cluster.
	framework.RemoveMember(t, f.m)
	framework.WaitFor(t, 30*time.Second, "b dropped from the release", func(context.Context) (bool, error) {
		st := statusIn(p)
		return len(st.Members) == 0 && st.Phase == api.PhasePaused, nil
	})
	kept := b.deployment()
	time.Sleep(2 * time.Second)
	if now := b.deployment(); !cmp.Equal(now.Annotations, kept.Annotations) || now.Spec.Paused != kept.Spec.Paused {
		t.Errorf("vane still writes to the dropped cluster b: %v → %v", kept.Annotations, now.Annotations)
	}

	framework.AddMember(t, f.m)
	framework.WaitFor(t, 30*time.Second, "b taken back in", func(context.Context) (bool, error) {
		return slices.Equal(members(statusIn(p)), []string{"primary", "b"}), nil
	})
	p.whenAction(api.ActionPromote)
	for _, a := range f.both() {
		a.waitPhase(api.PhaseHealthy, 90*time.Second)
		a.waitAvailable("v2")
	}
}

// Seed 003, as written apart from the namespace and the images: helloworld
// v1 runs in vane's cluster, v2 in member b; the DestinationRule (subsets
// by version, ISTIO_MUTUAL everywhere) and the Gateway-bound VirtualService
// (80/20) live in vane's cluster.
const seed003 = `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
   name: helloworld
   namespace: %[1]s
spec:
   host: helloworld
   subsets:
     - labels:
         version: v1
       name: v1
       trafficPolicy:
         tls:
           mode: ISTIO_MUTUAL
     - labels:
         version: v2
       name: v2
       trafficPolicy:
         tls:
           mode: ISTIO_MUTUAL
   trafficPolicy:
     tls:
       mode: ISTIO_MUTUAL
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
   name: gray-demo-gateway
   namespace: %[1]s
spec:
   selector:
     istio: ingressgateway # use istio default controller
   servers:
     - port:
         number: 80
         name: http
         protocol: HTTP
       hosts:
         - "*"
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
   name: gray-demo-vs
   namespace: %[1]s
spec:
   gateways:
     - gray-demo-gateway
   hosts:
     - "*"
   http:
     - name: http-5000
       route:
         - destination:
             host: helloworld.%[1]s.svc.cluster.local
             port:
               number: 5000
             subset: v1
           weight: 80
         - destination:
             host: helloworld.%[1]s.svc.cluster.local
             port:
               number: 5000
             subset: v2
           weight: 20
`

// helloworld is a Deployment of seed 003's app at version v (its Service is
// the same in both clusters).
func helloworld(ns, v, strategy string) string {
	meta := fmt.Sprintf("  name: helloworld-%s\n  namespace: %s\n  labels: {app: helloworld}\n", v, ns)
	if strategy != "" {
		meta = fmt.Sprintf("  name: helloworld-%s\n  namespace: %s\n  labels: {app: helloworld, vane.io/canary: enabled}\n  annotations:\n    vane.io/strategy: |\n%s\n", v, ns, indent(strategy, "      "))
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
%sspec:
  replicas: 2
  selector: {matchLabels: {app: helloworld, version: %[2]s}}
  template:
    metadata:
      labels: {app: helloworld, version: %[2]s}
    spec:
      containers:
      - name: helloworld
        image: docker.m.daocloud.io/istio/examples-helloworld-%[2]s
        ports: [{containerPort: 5000}]
`, meta, v)
}

const helloworldService = `apiVersion: v1
kind: Service
metadata: {name: helloworld, namespace: %s, labels: {app: helloworld}}
spec:
  selector: {app: helloworld}
  ports: [{name: http-5000, port: 5000, targetPort: 5000}]
`

const seed003Strategy = `trafficRouting:
  istio:
    virtualService: {name: gray-demo-vs, routes: [http-5000]}
    destinationRule: {name: helloworld, canarySubsetName: v2, stableSubsetName: v1}
steps:
- setWeight: 20
- pause: {duration: 1s}
- setWeight: 50
- pause: {}
- setWeight: 100
scaleDownDelaySeconds: 1
`

// TestSeed003AcrossClusters: opting in the v2 Deployment of member b moves
// seed 003's traffic from v1 (vane's cluster) to v2 (b) step by step; abort
// and retry work as in one cluster; after the last step v1 is scaled down
// (scaleDownDelaySeconds). The mesh objects stay as applied but for the
// two weights.
func TestSeed003AcrossClusters(t *testing.T) {
	c := framework.Vane(t)
	m := framework.StartMember(t, "b")
	framework.AddMember(t, m)
	ns := c.Namespace(t)
	sameNamespace(t, m, ns)
	v1 := &app{t: t, c: c, ns: ns, name: "helloworld-v1", mesh: meshNames{vs: "gray-demo-vs", route: "http-5000", dr: "helloworld"}}
	v2 := &app{t: t, c: m, ns: ns, name: "helloworld-v2", mesh: v1.mesh}
	for _, doc := range strings.Split(fmt.Sprintf(seed003, ns), "---\n") {
		v1.apply(doc)
	}
	v1.apply(fmt.Sprintf(helloworldService, ns))
	v2.apply(fmt.Sprintf(helloworldService, ns))
	vsApplied, drApplied := v1.virtualService(), destinationRule(t, c, ns, "helloworld")
	v1.apply(helloworld(ns, "v1", ""))
	v1.waitAvailable("v1")

	v2.apply(helloworld(ns, "v2", seed003Strategy))
	var st api.Status
	framework.WaitFor(t, 60*time.Second, "the side-by-side release at its pause", func(context.Context) (bool, error) {
		st = statusIn(v2)
		return st.Phase == api.PhasePaused, nil
	})
	if !st.SideBySide || st.StableVersion != "v1" || st.CanaryVersion != "v2" || st.CanaryWeight != 50 {
		t.Fatalf("status at the pause %+v, want side by side v1 → v2 at 50%%", st)
	}
	if got := v2.shiftedWeights(); !slices.Equal(got, []int32{50}) {
		t.Errorf("weights written %v, want [50] (20 was already there)", got)
	}
	if w := splitOf(t, v1.virtualService()); w != [2]int32{50, 50} {
		t.Errorf("weights v1/v2 = %v, want 50/50", w)
	}

	// Abort: all traffic to v1 at once; the v2 Deployment and the subsets stay.
	v2.whenAction(api.ActionAbort)
	v2.waitPhase(api.PhaseAborted, 10*time.Second)
	if w := splitOf(t, v1.virtualService()); w != [2]int32{100, 0} {
		t.Errorf("after abort weights v1/v2 = %v, want 100/0", w)
	}
	if d := v2.deployment(); *d.Spec.Replicas != 2 || d.Spec.Paused {
		t.Errorf("abort changed the v2 Deployment: replicas %d, paused %t", *d.Spec.Replicas, d.Spec.Paused)
	}

	// Retry, then promote at the pause: 100% on v2, v1 scaled down.
	v2.whenAction(api.ActionRetry)
	framework.WaitFor(t, 60*time.Second, "the retried release at its pause", func(context.Context) (bool, error) {
		st := statusIn(v2)
		return st.Phase == api.PhasePaused && st.CanaryWeight == 50, nil
	})
	v2.whenAction(api.ActionPromote)
	st = v2.waitPhase(api.PhaseHealthy, 60*time.Second)
	if st.StableVersion != "v2" {
		t.Errorf("final stable %q, want v2", st.StableVersion)
	}
	if w := splitOf(t, v1.virtualService()); w != [2]int32{0, 100} {
		t.Errorf("final weights v1/v2 = %v, want 0/100", w)
	}
	if r := *v1.deployment().Spec.Replicas; r != 0 {
		t.Errorf("v1 has %d replicas after the release, want 0 (scaleDownDelaySeconds)", r)
	}
	if r := *v2.deployment().Spec.Replicas; r != 2 {
		t.Errorf("v2 has %d replicas, want its own 2", r)
	}
	if n := countReason(v1.events(), "OldVersionScaledDown"); n != 1 {
		t.Errorf("%d OldVersionScaledDown Events on helloworld-v1, want 1: %v", n, v1.events())
	}

	// Seed 003's objects: untouched but for the two weights.
	vs := v1.virtualService()
	ignoreWeights := protocmp.IgnoreFields(&networkingv1alpha3.HTTPRouteDestination{}, "weight")
	if diff := cmp.Diff(&vsApplied.Spec, &vs.Spec, protocmp.Transform(), ignoreWeights); diff != "" {
		t.Errorf("VirtualService changed beyond its weights (-applied +now):\n%s", diff)
	}
	if diff := cmp.Diff(&drApplied.Spec, &destinationRule(t, c, ns, "helloworld").Spec, protocmp.Transform()); diff != "" {
		t.Errorf("DestinationRule changed (-applied +now):\n%s", diff)
	}
}

func destinationRule(t *testing.T, c *framework.Cluster, ns, name string) *istionetworkingv1.DestinationRule {
	t.Helper()
	dr := &istionetworkingv1.DestinationRule{}
	if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, dr); err != nil {
		t.Fatal(err)
	}
	return dr
}

// splitOf is the v1 and v2 weights of route http-5000.
func splitOf(t *testing.T, vs *istionetworkingv1.VirtualService) [2]int32 {
	t.Helper()
	var out [2]int32
	for _, r := range vs.Spec.GetHttp() {
		if r.GetName() != "http-5000" {
			continue
		}
		for _, d := range r.GetRoute() {
			switch d.GetDestination().GetSubset() {
			case "v1":
				out[0] = d.GetWeight()
			case "v2":
				out[1] = d.GetWeight()
			}
		}
	}
	return out
}

// TestSideBySideMeshObjectsLater: a GitOps sync may create the opted-in v2
// Deployment before the DestinationRule and VirtualService. vane then does
// not adopt it as the stable version; once the mesh objects exist, the
// side-by-side release runs (here in one cluster, bookinfo style).
func TestSideBySideMeshObjectsLater(t *testing.T) {
	c := framework.Vane(t)
	ns := c.Namespace(t)
	v1 := &app{t: t, c: c, ns: ns, name: "helloworld-v1", mesh: meshNames{vs: "gray-demo-vs", route: "http-5000", dr: "helloworld"}}
	v2 := &app{t: t, c: c, ns: ns, name: "helloworld-v2", mesh: v1.mesh}
	v1.apply(fmt.Sprintf(helloworldService, ns))
	v1.apply(helloworld(ns, "v1", ""))
	v2.apply(helloworld(ns, "v2", strings.Replace(seed003Strategy, "- pause: {}\n", "", 1)))
	v2.waitAvailable("v2")
	time.Sleep(2 * time.Second)
	if st, _ := api.StatusFrom(v2.deployment().Annotations); st != nil {
		t.Fatalf("v2 adopted before its mesh objects exist: %+v", st)
	}
	for _, doc := range strings.Split(fmt.Sprintf(seed003, ns), "---\n") {
		v1.apply(doc)
	}
	framework.WaitFor(t, 60*time.Second, "the side-by-side release to complete", func(context.Context) (bool, error) {
		st := statusIn(v2)
		return st.Phase == api.PhaseHealthy && st.StableVersion == "v2", nil
	})
	if w := splitOf(t, v1.virtualService()); w != [2]int32{0, 100} {
		t.Errorf("final weights v1/v2 = %v, want 0/100", w)
	}
	if got := v2.shiftedWeights(); !slices.Equal(got, []int32{50, 100}) {
		t.Errorf("weights written %v, want [50 100]", got)
	}
}
