package e2e

// Seed 004 (bookinfo reviews v2 → v3 in batches, a manual gate, promote or
// roll back), canaries without a mesh, and batch specs denied at admission.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/api"
)

// givenBookinfo applies examples/bookinfo/reviews.yaml as it is, in a
// namespace of its own, and waits until reviews v2 is available.
func givenBookinfo(t *testing.T) *app {
	t.Helper()
	c := framework.Vane(t)
	a := &app{t: t, c: c, ns: c.Namespace(t), name: "reviews", mesh: meshNames{vs: "reviews", route: "primary", dr: "reviews"}}
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "examples", "bookinfo", "reviews.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		a.apply(strings.ReplaceAll(doc, "namespace: bookinfo", "namespace: "+a.ns))
	}
	a.waitAvailable("v2")
	return a
}

// whenReviewsEdited edits reviews to version v, as the seed's application
// update does: the version label and the image of that version.
func (a *app) whenReviewsEdited(v string) {
	a.t.Helper()
	patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/template/metadata/labels/version","value":%q},
{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"docker.io/istio/examples-bookinfo-reviews-%s:1.20.3"}]`, v, v)
	d := &appsv1.Deployment{}
	d.Namespace, d.Name = a.ns, a.name
	if err := a.c.Client.Patch(context.Background(), d, client.RawPatch(types.JSONPatchType, []byte(patch))); err != nil {
		a.t.Fatalf("edit version to %s: %v", v, err)
	}
}

func (a *app) destinationRule() *istionetworkingv1.DestinationRule {
	a.t.Helper()
	dr := &istionetworkingv1.DestinationRule{}
	if err := a.c.Client.Get(context.Background(), a.key(a.names().dr), dr); err != nil {
		a.t.Fatalf("get destinationrule: %v", err)
	}
	return dr
}

// subsetVersions renders the version label of each subset: "stable=v2 canary=v3".
func subsetVersions(dr *istionetworkingv1.DestinationRule) string {
	var out []string
	for _, s := range dr.Spec.Subsets {
		out = append(out, s.Name+"="+s.Labels["version"])
	}
	return strings.Join(out, " ")
}

// routeWeights renders the weighted route's destinations: "stable=90 canary=10".
func (a *app) routeWeights() string {
	a.t.Helper()
	var out []string
	for _, h := range a.virtualService().Spec.Http {
		if h.Name != a.names().route {
			continue
		}
		for _, d := range h.Route {
			out = append(out, fmt.Sprintf("%s=%d", d.Destination.Subset, d.Weight))
		}
	}
	return strings.Join(out, " ")
}

// readyPods counts the Ready pods of the app per version, canary pods
// marked: "v2=2 v3(canary)=1".
func (a *app) readyPods() string {
	a.t.Helper()
	var pods corev1.PodList
	if err := a.c.Client.List(context.Background(), &pods, client.InNamespace(a.ns), client.MatchingLabels(a.deployment().Spec.Selector.MatchLabels)); err != nil {
		a.t.Fatal(err)
	}
	count := map[string]int{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || !podReady(&p) {
			continue
		}
		key := p.Labels["version"]
		if p.Labels[api.LabelRole] == api.RoleCanary {
			key += "(canary)"
		}
		count[key]++
	}
	var out []string
	for k, n := range count {
		out = append(out, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// replicasWatch samples the original Deployment's spec.replicas every 20ms
// and collects every value it sees.
type replicasWatch struct {
	mu   sync.Mutex
	seen map[int32]bool
	stop chan struct{}
	done chan struct{}
}

func (a *app) watchReplicas() *replicasWatch {
	w := &replicasWatch{seen: map[int32]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			d := &appsv1.Deployment{}
			if err := a.c.Client.Get(context.Background(), a.key(a.name), d); err == nil && d.Spec.Replicas != nil {
				w.mu.Lock()
				w.seen[*d.Spec.Replicas] = true
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	a.t.Cleanup(w.halt)
	return w
}

func (w *replicasWatch) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// values stops the watch and returns the values seen, sorted.
func (w *replicasWatch) values() []int32 {
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []int32
	for v := range w.seen {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Seed 004, "canary release" then "continue with full release": reviews
// v2 → v3 by an edit; one v3 pod beside the two v2 ones gets 10% of the
// traffic; the release waits for a person; promote sends everything to v3.
func TestSeed004BatchGatePromote(t *testing.T) {
	a := givenBookinfo(t)
	vsBefore := a.virtualService()
	rec := a.record()

	a.whenReviewsEdited("v3")
	st := a.waitPhase(api.PhasePaused, 30*time.Second)
	t.Run("batch 1 with 10% of the traffic, at the gate", func(t *testing.T) {
		if st.CanaryWeight != 10 || st.CurrentStepIndex != 2 {
			t.Errorf("status %+v, want paused at step 2 with weight 10", st)
		}
		if got, want := a.readyPods(), "v2=2 v3(canary)=1"; got != want {
			t.Errorf("ready pods %s, want %s (one v3 instance beside the two v2 ones)", got, want)
		}
		if got, want := a.routeWeights(), "stable=90 canary=10"; got != want {
			t.Errorf("route primary: %s, want %s", got, want)
		}
		if got, want := subsetVersions(a.destinationRule()), "stable=v2 canary=v3"; got != want {
			t.Errorf("subsets %s, want %s", got, want)
		}
		if d := a.deployment(); *d.Spec.Replicas != 2 || !d.Spec.Paused {
			t.Errorf("reviews: replicas %d paused %v, want 2 and held", *d.Spec.Replicas, d.Spec.Paused)
		}
	})
	time.Sleep(2 * time.Second)
	if st := a.status(); st.Phase != api.PhasePaused {
		t.Fatalf("the gate opened on its own: %+v", st)
	}

	a.whenAction(api.ActionPromote)
	a.waitPhase(api.PhaseHealthy, 30*time.Second)
	a.waitAvailable("v3")
	hist := rec.history() // fails on any weight to a subset without Ready pods
	t.Run("full release", func(t *testing.T) {
		var weights []int32
		for _, o := range hist {
			if len(weights) == 0 || weights[len(weights)-1] != o.canaryWeight {
				weights = append(weights, o.canaryWeight)
			}
		}
		if diff := cmp.Diff([]int32{0, 10, 100, 0}, weights); diff != "" {
			t.Errorf("canary weights observed (-want,+got):\n%s", diff)
		}
		// Once the gate is passed (step 3/3), promotion sizes the canary
		// to full before it gets 100%; until then 10% runs on the batch.
		for _, o := range hist {
			if o.canaryWeight == 10 && o.step < 3 && o.canaryReplicas != 1 {
				t.Errorf("at 10%% (step %d, %s) the canary had %d replicas, want 1 (the batch)", o.step, o.phase, o.canaryReplicas)
			}
		}
		if got, want := subsetVersions(a.destinationRule()), "stable=v3 canary=v3"; got != want {
			t.Errorf("subsets %s, want %s", got, want)
		}
		if diff := cmp.Diff(&vsBefore.Spec, &a.virtualService().Spec, protocmp.Transform()); diff != "" {
			t.Errorf("VirtualService not back as it was, all traffic on stable (-before,+after):\n%s", diff)
		}
		if !a.canaryGone() {
			t.Error("canary left after promotion")
		}
		framework.WaitFor(t, 10*time.Second, "only the two v3 pods", func(context.Context) (bool, error) {
			return a.readyPods() == "v3=2", nil
		})
	})
}

// Seed 004, "rollback to the old version", both ways a user does it: abort
// at the gate (then edit back), or edit the version back. Afterwards the
// subsets select only v2, every request goes to v2, no canary remains.
func TestSeed004Rollback(t *testing.T) {
	// rolledBack checks the seed's end state of a rollback.
	rolledBack := func(t *testing.T, a *app) {
		t.Helper()
		framework.WaitFor(t, 20*time.Second, "no canary and both subsets on v2", func(context.Context) (bool, error) {
			return a.canaryGone() && subsetVersions(a.destinationRule()) == "stable=v2 canary=v2", nil
		})
		if got, want := a.routeWeights(), "stable=100 canary=0"; got != want {
			t.Errorf("route primary: %s, want %s", got, want)
		}
		framework.WaitFor(t, 20*time.Second, "no canary pods", func(context.Context) (bool, error) {
			return a.readyPods() == "v2=2", nil
		})
	}
	atTheGate := func(t *testing.T) *app {
		a := givenBookinfo(t)
		a.whenReviewsEdited("v3")
		a.waitPhase(api.PhasePaused, 30*time.Second)
		if got := a.routeWeights(); got != "stable=90 canary=10" {
			t.Fatalf("at the gate: %s, want 10%% on the canary", got)
		}
		return a
	}

	t.Run("abort, then edit the version back", func(t *testing.T) {
		a := atTheGate(t)
		rs := a.replicaSets()
		rec := a.record()
		aborted := a.whenAction(api.ActionAbort)
		framework.WaitFor(t, 5*time.Second, "all traffic on v2", func(context.Context) (bool, error) {
			return a.routeWeights() == "stable=100 canary=0", nil
		})
		if took := time.Since(aborted); took > time.Second {
			t.Errorf("abort took %s to send all traffic to v2, want within a second", took)
		}
		st := a.waitPhase(api.PhaseAborted, 10*time.Second)
		rolledBack(t, a)
		if d := a.deployment(); !d.Spec.Paused || d.Spec.Template.Labels["version"] != "v3" {
			t.Errorf("aborted: paused %v on %s, want held on v3 until edited", d.Spec.Paused, d.Spec.Template.Labels["version"])
		}
		if st.StableVersion != "v2" || st.CanaryWeight != 0 {
			t.Errorf("aborted status %+v", st)
		}

		a.whenReviewsEdited("v2")
		st = a.waitPhase(api.PhaseHealthy, 30*time.Second)
		a.waitAvailable("v2")
		rec.history() // fails on any weight to a subset without Ready pods
		rolledBack(t, a)
		if st.StableVersion != "v2" || !strings.Contains(st.Message, "rolled back to v2") {
			t.Errorf("status %+v, want Healthy on v2 after a rollback", st)
		}
		if d := a.deployment(); len(d.Finalizers) != 0 {
			t.Errorf("finalizers left: %v", d.Finalizers)
		}
		if got := a.replicaSets(); !cmp.Equal(rs, got) {
			t.Errorf("the v2 pods were replaced: ReplicaSets %v, then %v", rs, got)
		}
	})

	t.Run("edit the version back", func(t *testing.T) {
		a := atTheGate(t)
		rec := a.record()
		a.whenReviewsEdited("v2")
		st := a.waitPhase(api.PhaseHealthy, 30*time.Second)
		a.waitAvailable("v2")
		rec.history()
		rolledBack(t, a)
		if !strings.Contains(st.Message, "rolled back to v2") {
			t.Errorf("status %+v, want a rollback to v2", st)
		}
	})
}

// A canary with no mesh at all (Argo's basic canary): setWeight 25 on 4
// replicas runs one canary pod beside the four stable ones, behind the one
// Service; the status says 20%; the original's replicas never change.
func TestCanaryWithoutMesh(t *testing.T) {
	c := framework.Vane(t)
	a := &app{t: t, c: c, ns: c.Namespace(t), name: "dubbo3-provider"}
	a.apply(fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: dubbo3-provider, namespace: %s}
spec:
  ports: [{name: grpc-20880, protocol: TCP, port: 20880, targetPort: 20880}]
  selector: {app: dubbo3-provider}
`, a.ns))
	a.apply(providerWith(a.ns, 4, "", "- setWeight: 25\n- pause: {}\n"))
	a.waitAvailable("v1")
	var vss istionetworkingv1.VirtualServiceList
	if err := c.Client.List(context.Background(), &vss, client.InNamespace(a.ns)); err != nil || len(vss.Items) != 0 {
		t.Fatalf("VirtualServices in the namespace: %d (%v), want none", len(vss.Items), err)
	}
	replicas := a.watchReplicas()

	a.whenVersionEdited("v2")
	st := a.waitPhase(api.PhasePaused, 30*time.Second)
	if st.CanaryWeight != 20 || !strings.Contains(st.Message, "paused at canary weight 20%") {
		t.Errorf("status %+v, want paused with the effective weight 20%%", st)
	}
	if got, want := a.readyPods(), "v1=4 v2(canary)=1"; got != want {
		t.Errorf("ready pods %s, want %s", got, want)
	}
	if c := a.canary(); c == nil || *c.Spec.Replicas != 1 {
		t.Errorf("canary %v, want 1 replica", c)
	}
	t.Run("the Service spreads over both versions", func(t *testing.T) {
		framework.WaitFor(t, 20*time.Second, "5 ready endpoints, 1 of them v2", func(ctx context.Context) (bool, error) {
			return serviceEndpoints(ctx, a) == "ready=5 canary=1", nil
		})
	})
	mustContain(t, "kubectl vane status", plugin(t, c)("status", a.name, "-n", a.ns),
		"dubbo3-provider  Paused  step 1/2", "stable  v1       4 ready", "canary  v2       1 ready, weight 20%",
		"no mesh: the Service spreads requests over the Ready pods of both versions")
	if ev := strings.Join(a.events(), "\n"); !strings.Contains(ev, "StepAdvanced: step 1/2 done: setWeight 25: 1 canary pod beside 4 stable, 20% of the traffic") {
		t.Errorf("no StepAdvanced event with the effective weight:\n%s", ev)
	}

	a.whenAction(api.ActionPromote)
	st = a.waitPhase(api.PhaseHealthy, 30*time.Second)
	a.waitAvailable("v2")
	if st.StableVersion != "v2" || st.CanaryWeight != 0 {
		t.Errorf("status %+v, want Healthy on v2", st)
	}
	if !a.canaryGone() {
		t.Error("canary left after promotion")
	}
	framework.WaitFor(t, 20*time.Second, "only the four v2 pods", func(context.Context) (bool, error) {
		return a.readyPods() == "v2=4", nil
	})
	if diff := cmp.Diff([]int32{4}, replicas.values()); diff != "" {
		t.Errorf("the original's spec.replicas during the release (-want,+got):\n%s", diff)
	}
	events := strings.Join(a.events(), "\n")
	if strings.Contains(events, "TrafficShifted") {
		t.Errorf("a release without a mesh wrote a traffic split:\n%s", events)
	}
}

// serviceEndpoints counts the ready endpoints of the app's Service and how
// many of them are canary pods: "ready=5 canary=1".
func serviceEndpoints(ctx context.Context, a *app) string {
	var slices discoveryv1.EndpointSliceList
	if err := a.c.Client.List(ctx, &slices, client.InNamespace(a.ns), client.MatchingLabels{discoveryv1.LabelServiceName: a.name}); err != nil {
		return err.Error()
	}
	canary := map[string]bool{}
	var pods corev1.PodList
	if err := a.c.Client.List(ctx, &pods, client.InNamespace(a.ns), client.MatchingLabels{api.LabelRole: api.RoleCanary}); err != nil {
		return err.Error()
	}
	for _, p := range pods.Items {
		canary[p.Name] = true
	}
	ready, onCanary := 0, 0
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || !*e.Conditions.Ready {
				continue
			}
			ready++
			if e.TargetRef != nil && canary[e.TargetRef.Name] {
				onCanary++
			}
		}
	}
	return fmt.Sprintf("ready=%d canary=%d", ready, onCanary)
}

// Bad batch specs are denied at admission with a message naming the field
// and the accepted form: more replicas than the Deployment has, 0%, > 100%.
func TestBadBatchDenied(t *testing.T) {
	c := framework.Vane(t)
	a := &app{t: t, c: c, ns: c.Namespace(t), name: "dubbo3-provider"}
	for name, tc := range map[string]struct{ steps, want string }{
		"more replicas than the Deployment has": {
			steps: "- setCanaryScale: {replicas: 5}\n- pause: {}\n",
			want:  `annotation vane.io/strategy: steps[0].setCanaryScale.replicas 5 is more than the Deployment's spec.replicas (4): a batch is a part of the Deployment's pods, added beside them; use at most 4, or a percentage such as "50%"`,
		},
		"a batch of 0%": {
			steps: "- setCanaryScale: {replicas: \"0%\"}\n",
			want:  `annotation vane.io/strategy: steps[0].setCanaryScale.replicas "0%" is not allowed: a batch is a number of pods (replicas: 1) or a percentage of the Deployment's replicas from 1% to 100% (replicas: "50%")`,
		},
		"a batch above 100%": {
			steps: "- setCanaryScale: {replicas: 1}\n- pause: {}\n- setCanaryScale: {replicas: \"150%\"}\n",
			want:  `annotation vane.io/strategy: steps[2].setCanaryScale.replicas "150%" is not allowed`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := a.create(providerYAML(a.ns, 4, tc.steps))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create: %v\nwant a denial containing %q", err, tc.want)
			}
		})
	}

	t.Run("an edit to a batch too large is denied, the Deployment unchanged", func(t *testing.T) {
		a.apply(providerYAML(a.ns, 2, "- setCanaryScale: {replicas: \"50%\"}\n- pause: {}\n"))
		before := a.deployment()
		d := before.DeepCopy()
		d.Annotations[api.AnnotationStrategy] = "steps:\n- setCanaryScale: {replicas: 3}\n"
		err := a.c.Client.Update(context.Background(), d)
		want := "steps[0].setCanaryScale.replicas 3 is more than the Deployment's spec.replicas (2)"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("update: %v, want a denial containing %q", err, want)
		}
		if after := a.deployment(); after.Generation != before.Generation || after.Annotations[api.AnnotationStrategy] != before.Annotations[api.AnnotationStrategy] {
			t.Error("a denied update changed the Deployment")
		}
	})
}
