package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/api"
)

const seedSteps = `- setWeight: 5
- pause: {duration: 3s}
- setWeight: 50
- pause: {duration: 3s}
`

// The seed's weight scenario: v1 → v2 by a plain edit, 5% → pause → 50% →
// pause → promotion, with every route change checked against the Ready pods.
func TestWeightCanarySeedScenario(t *testing.T) {
	a := givenApp(t, 4, seedSteps)
	vsBefore := a.virtualService()
	rec := a.record()

	a.whenVersionEdited("v2")
	if d := a.deployment(); !d.Spec.Paused {
		t.Fatalf("the edit was not held: spec.paused=false")
	}
	a.waitPhase(api.PhaseHealthy, 60*time.Second)
	a.waitAvailable("v2")
	hist := rec.history()

	t.Run("weights in step order", func(t *testing.T) {
		weights := canaryWeights(hist)
		if diff := cmp.Diff([]int32{0, 5, 50, 100, 0}, weights); diff != "" {
			t.Errorf("canary weights observed (-want,+got):\n%s", diff)
		}
	})
	t.Run("canary replicas follow the weight", func(t *testing.T) {
		// ceil(weight% × 4): the canary is sized before its weight is
		// written, so it may be larger (sized for the next step), never smaller.
		want := map[int32]int32{5: 1, 50: 2, 100: 4}
		seen := map[int32]bool{}
		for _, o := range hist {
			if o.canaryWeight == 0 || o.stableWeight == 0 {
				continue
			}
			if !seen[o.canaryWeight] && o.canaryReplicas != want[o.canaryWeight] {
				t.Errorf("when canary weight %d was written the canary had %d replicas, want %d", o.canaryWeight, o.canaryReplicas, want[o.canaryWeight])
			}
			if o.canaryReplicas < want[o.canaryWeight] {
				t.Errorf("at canary weight %d the canary had %d replicas, want at least %d", o.canaryWeight, o.canaryReplicas, want[o.canaryWeight])
			}
			seen[o.canaryWeight] = true
		}
		if len(seen) != 2 {
			t.Errorf("weights seen with both subsets carrying traffic: %v, want 5 and 50", seen)
		}
	})
	t.Run("pauses last their duration within a second", func(t *testing.T) {
		// A step began between the look that first saw it and the one
		// before, so a pause lasted at least end.since-begin.at and at most
		// end.at-begin.since: a pause is too short or too long only when
		// these bounds say so, however slowly the recorder looked.
		started := map[int32]observation{}
		for _, o := range hist {
			if _, ok := started[o.step]; !ok {
				started[o.step] = o
			}
		}
		for _, pause := range []int32{1, 3} {
			begin, end := started[pause], started[pause+1]
			if begin.at.IsZero() || end.at.IsZero() {
				t.Fatalf("step %d or %d never observed: %v", pause, pause+1, started)
			}
			if most, least := end.at.Sub(begin.since), end.since.Sub(begin.at); most < 3*time.Second-100*time.Millisecond || least > 4*time.Second {
				t.Errorf("pause at step %d lasted %s to %s, want 3s (within a second)", pause, least, most)
			}
		}
	})
	t.Run("final state", func(t *testing.T) {
		d := a.deployment()
		st := a.status()
		if st.Phase != api.PhaseHealthy || st.StableVersion != "v2" || st.CanaryWeight != 0 {
			t.Errorf("status = %+v, want Healthy on v2 with canary weight 0", st)
		}
		if len(d.Finalizers) != 0 {
			t.Errorf("finalizers left: %v", d.Finalizers)
		}
		if !a.canaryGone() {
			t.Error("canary Deployment still exists")
		}
		last := a.observeNow()
		if last.stableWeight != 100 || last.canaryWeight != 0 || last.stableSubset["version"] != "v2" {
			t.Errorf("final routes %s, want stable (version v2) 100", last.routes())
		}
	})
	t.Run("other routes and fields of the VirtualService unchanged", func(t *testing.T) {
		after := a.virtualService()
		// Only the weights of route test-v1 may differ; they are back to 100/0.
		if diff := cmp.Diff(&vsBefore.Spec, &after.Spec, protocmp.Transform()); diff != "" {
			t.Errorf("VirtualService spec changed (-before,+after):\n%s", diff)
		}
		if diff := cmp.Diff(vsBefore.Labels, after.Labels); diff != "" {
			t.Errorf("labels changed: %s", diff)
		}
	})
	t.Run("events tell the story", func(t *testing.T) {
		want := []string{
			"TrafficShifted: canary v2 weight 0%, stable v1 weight 100%", // subsets point at v1 and v2
			"TrafficShifted: canary v2 weight 5%, stable v1 weight 95%",
			"StepAdvanced: step 1/4 done: setWeight 5",
			"StepAdvanced: step 2/4 done: pause 3s",
			"TrafficShifted: canary v2 weight 50%, stable v1 weight 50%",
			"StepAdvanced: step 3/4 done: setWeight 50",
			"StepAdvanced: step 4/4 done: pause 3s",
			"TrafficShifted: canary v2 weight 100%, stable v1 weight 0%",
			"TrafficShifted: canary v2 weight 100%, stable (any version) weight 0%", // stable widened for the native rollout
			"Promoting: rolling out v2 natively",
			"TrafficShifted: canary v2 weight 100%, stable v2 weight 0%", // stable subset moves to v2
			"TrafficShifted: canary v2 weight 0%, stable v2 weight 100%",
			"RolloutCompleted: release of v2 complete: all traffic on stable",
		}
		var got []string
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for got = a.events(); len(got) < len(want) && ctx.Err() == nil; got = a.events() {
			time.Sleep(100 * time.Millisecond)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("events (-want,+got):\n%s", diff)
		}
	})
}

// A controller restarted during a timed pause resumes the same step with the
// remaining time: the pause is not restarted.
func TestRestartDuringPause(t *testing.T) {
	a := givenApp(t, 2, "- setWeight: 20\n- pause: {duration: 8s}\n- setWeight: 40\n")
	a.whenVersionEdited("v2")
	var st api.Status
	framework.WaitFor(t, 30*time.Second, "the pause step", func(context.Context) (bool, error) {
		st = a.status()
		return st.CurrentStepIndex == 1, nil
	})
	pauseStart := st.StepStartedAt.Time
	framework.RestartVane(t)
	if got := a.status(); got.CurrentStepIndex != 1 || !got.StepStartedAt.Time.Equal(pauseStart) {
		t.Fatalf("after restart: step %d started %v, want step 1 started %v", got.CurrentStepIndex, got.StepStartedAt, pauseStart)
	}
	framework.WaitFor(t, 30*time.Second, "the step after the pause", func(context.Context) (bool, error) {
		st = a.status()
		return st.CurrentStepIndex >= 2, nil
	})
	ended := time.Now()
	if d := ended.Sub(pauseStart); d < 8*time.Second-100*time.Millisecond || d > 9*time.Second {
		t.Errorf("pause across a restart lasted %s, want 8s within a second", d)
	}
	a.waitPhase(api.PhaseHealthy, 30*time.Second)
}

// A server-side dry run of the version edit shows the hold in its answer
// but changes nothing: the webhook has no side effects.
func TestDryRunHasNoSideEffects(t *testing.T) {
	a := givenApp(t, 2, seedSteps)
	before := a.deployment()
	d := &appsv1.Deployment{}
	d.Namespace, d.Name = a.ns, a.name
	if err := a.c.Client.Patch(context.Background(), d, client.RawPatch(types.JSONPatchType, versionEdit("v2")), client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	if st, _ := api.StatusFrom(d.Annotations); !d.Spec.Paused || st == nil || st.Phase != api.PhaseProgressing {
		t.Errorf("dry-run answer: paused=%v status=%q; want the hold shown", d.Spec.Paused, d.Annotations[api.AnnotationStatus])
	}
	time.Sleep(2 * time.Second)
	after := a.deployment()
	// The Deployment controller may still write status meanwhile: compare the
	// spec (generation) and what vane would have written.
	if after.Generation != before.Generation || after.Spec.Paused || after.Annotations[api.AnnotationStatus] != before.Annotations[api.AnnotationStatus] || !cmp.Equal(after.Finalizers, before.Finalizers) {
		t.Errorf("dry run changed the Deployment: generation %d→%d paused=%v status=%q finalizers %v", before.Generation, after.Generation, after.Spec.Paused, after.Annotations[api.AnnotationStatus], after.Finalizers)
	}
	if !a.canaryGone() {
		t.Error("dry run created a canary Deployment")
	}
	if ev := a.events(); len(ev) != 0 {
		t.Errorf("dry run recorded events: %v", ev)
	}
}

// A bad strategy is denied at admission with a message naming the
// annotation, the field and the accepted form; nothing is half-applied.
func TestBadStrategyDenied(t *testing.T) {
	c := framework.Vane(t)
	a := &app{t: t, c: c, ns: c.Namespace(t), name: "dubbo3-provider"}
	err := a.create(providerYAML(a.ns, 1, "- setWeight: 120\n"))
	want := "annotation vane.io/strategy: steps[0].setWeight 120 is not allowed: must be an integer from 0 to 100"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("create: %v, want denial containing %q", err, want)
	}

	vs, dr := meshYAML(a.ns)
	a.apply(vs)
	a.apply(dr)
	a.apply(providerYAML(a.ns, 1, seedSteps))
	// vane adopts the Deployment once v1 is rolled out by writing its
	// status annotation, and the API server bumps a Deployment's generation
	// on any annotation change: read "before" only after that, or the
	// adoption would pass for a change made by the denied update.
	a.waitAvailable("v1")
	a.waitAdopted("v1")
	before := a.deployment()
	// A merge patch, as kubectl apply sends: no resourceVersion to conflict on.
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{api.AnnotationStrategy: seedRouting + "steps:\n- setWeight: 5\n  analysis: {templates: []}\n"}},
		"spec":     map[string]any{"template": map[string]any{"metadata": map[string]any{"labels": map[string]string{"version": "v2"}}}},
	})
	err = a.c.Client.Patch(context.Background(), before.DeepCopy(), client.RawPatch(types.MergePatchType, patch))
	want = `annotation vane.io/strategy has unknown field "steps[0].analysis"; accepted fields are`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("update: %v, want denial naming steps[0].analysis", err)
	}
	after := a.deployment()
	if after.Generation != before.Generation || after.Annotations[api.AnnotationStrategy] != before.Annotations[api.AnnotationStrategy] || after.Spec.Template.Labels["version"] != "v1" {
		t.Errorf("a denied update changed the Deployment: generation %d → %d, version %q, strategy changed %v",
			before.Generation, after.Generation, after.Spec.Template.Labels["version"], after.Annotations[api.AnnotationStrategy] != before.Annotations[api.AnnotationStrategy])
	}
}

// A Deployment that did not opt in rolls out natively, untouched.
func TestNotOptedInUntouched(t *testing.T) {
	c := framework.Vane(t)
	a := &app{t: t, c: c, ns: c.Namespace(t), name: "dubbo3-provider"}
	manifest := strings.Replace(providerYAML(a.ns, 2, seedSteps), "vane.io/canary: enabled", "other: x", 1)
	a.apply(manifest)
	a.waitAvailable("v1")
	a.whenVersionEdited("v2")
	a.waitAvailable("v2")
	d := a.deployment()
	if d.Annotations[api.AnnotationStatus] != "" || len(d.Finalizers) != 0 {
		t.Errorf("not opted in, yet annotated %q / finalizers %v", d.Annotations[api.AnnotationStatus], d.Finalizers)
	}
	if !a.canaryGone() {
		t.Error("canary created for a Deployment that did not opt in")
	}
}

// Deleting the Deployment mid-release returns traffic to stable and leaves
// no canary behind.
func TestDeleteMidRelease(t *testing.T) {
	a := givenApp(t, 2, "- setWeight: 50\n- pause: {}\n")
	a.whenVersionEdited("v2")
	a.waitPhase(api.PhasePaused, 30*time.Second)
	if w := a.status().CanaryWeight; w != 50 {
		t.Fatalf("canary weight %d, want 50", w)
	}
	if err := a.c.Client.Delete(context.Background(), a.deployment()); err != nil {
		t.Fatal(err)
	}
	framework.WaitFor(t, 30*time.Second, "the Deployment and its canary gone", func(ctx context.Context) (bool, error) {
		err := a.c.Client.Get(ctx, a.key(a.name), &appsv1.Deployment{})
		return apierrors.IsNotFound(err) && a.canaryGone(), nil
	})
	vs := a.virtualService()
	for _, h := range vs.Spec.Http {
		for _, d := range h.Route {
			if d.Destination.Subset == "canary" && d.Weight != 0 {
				t.Errorf("route %s still sends %d%% to the canary", h.Name, d.Weight)
			}
		}
	}
	var pods corev1.PodList
	framework.WaitFor(t, 30*time.Second, "canary pods gone", func(ctx context.Context) (bool, error) {
		err := a.c.Client.List(ctx, &pods, client.InNamespace(a.ns), client.MatchingLabels{api.LabelRole: api.RoleCanary})
		return err == nil && len(pods.Items) == 0, err
	})
}

// A release whose VirtualService does not exist yet waits Degraded with a
// clear message, writes no route, and proceeds when it appears.
func TestMissingVirtualServiceWaits(t *testing.T) {
	c := framework.Vane(t)
	a := &app{t: t, c: c, ns: c.Namespace(t), name: "dubbo3-provider"}
	vs, dr := meshYAML(a.ns)
	a.apply(dr)
	a.apply(providerYAML(a.ns, 2, "- setWeight: 50\n"))
	a.waitAvailable("v1")
	a.whenVersionEdited("v2")
	st := a.waitPhase(api.PhaseDegraded, 30*time.Second)
	if want := "VirtualService " + a.ns + "/provider not found"; !strings.Contains(st.Message, want) {
		t.Errorf("message %q, want it to contain %q", st.Message, want)
	}
	if !a.canaryGone() {
		t.Error("canary created while the routes are missing")
	}
	if ev := strings.Join(a.events(), "\n"); !strings.Contains(ev, "RolloutDegraded: VirtualService") {
		t.Errorf("no RolloutDegraded event: %s", ev)
	}
	a.apply(vs)
	a.waitPhase(api.PhaseHealthy, 30*time.Second)
	a.waitAvailable("v2")
}

// Editing the version back to stable mid-release rolls back: all traffic to
// stable, the canary removed, the Deployment resumed on its old template.
func TestEditBackRollsBack(t *testing.T) {
	a := givenApp(t, 2, "- setWeight: 50\n- pause: {}\n")
	rs := a.replicaSets()
	rec := a.record()
	a.whenVersionEdited("v2")
	a.waitPhase(api.PhasePaused, 30*time.Second)
	a.whenVersionEdited("v1")
	st := a.waitPhase(api.PhaseHealthy, 30*time.Second)
	a.waitAvailable("v1")
	rec.history() // fails on traffic to a subset without Ready pods
	if st.StableVersion != "v1" || !strings.Contains(st.Message, "rolled back to v1") {
		t.Errorf("status %+v, want Healthy on v1 after a rollback", st)
	}
	if !a.canaryGone() {
		t.Error("canary left after the rollback")
	}
	last := a.observeNow()
	if last.stableWeight != 100 || last.stableSubset["version"] != "v1" || last.canarySubset["version"] != "v1" {
		t.Errorf("routes after rollback: %s, want everything on v1", last.routes())
	}
	if got := a.replicaSets(); !cmp.Equal(rs, got) {
		t.Errorf("the stable pods were replaced: ReplicaSets %v, then %v", rs, got)
	}
}

// A new version during a release drains the canary before its subset
// changes, then walks the steps again for the newest version.
func TestNewVersionMidRelease(t *testing.T) {
	a := givenApp(t, 2, "- setWeight: 50\n- pause: {}\n")
	rec := a.record()
	a.whenVersionEdited("v2")
	a.waitPhase(api.PhasePaused, 30*time.Second)
	a.whenVersionEdited("v3")
	framework.WaitFor(t, 30*time.Second, "the release of v3 paused at 50%", func(context.Context) (bool, error) {
		st := a.status()
		return st.Phase == api.PhasePaused && st.CanaryVersion == "v3" && st.CanaryWeight == 50, nil
	})
	rec.history() // fails on traffic to a subset without Ready pods
	// The v2 canary carried 50%; it went to 0 before its subset moved to v3.
	events := strings.Join(a.events(), "\n")
	drain := "TrafficShifted: canary v2 weight 0%, stable v1 weight 100%"
	relabel := "TrafficShifted: canary v3 weight 0%, stable v1 weight 100%"
	if i, j := strings.Index(events, drain), strings.Index(events, relabel); i < 0 || j < i {
		t.Errorf("want %q before %q; events:\n%s", drain, relabel, events)
	}
	st := a.status()
	if st.StableVersion != "v1" {
		t.Errorf("stable version %q, want v1 (the release keeps its stable)", st.StableVersion)
	}
	last := a.observeNow()
	if last.canarySubset["version"] != "v3" || last.canaryWeight != 50 || last.stableSubset["version"] != "v1" {
		t.Errorf("routes: %s, want canary v3 at 50 and stable v1", last.routes())
	}
}

// Removing the opt-in label mid-release ends the release as if vane had
// never held it: traffic back to stable, the canary removed, the native
// rollout resumes.
func TestOptOutMidRelease(t *testing.T) {
	a := givenApp(t, 2, "- setWeight: 50\n- pause: {}\n")
	a.whenVersionEdited("v2")
	a.waitPhase(api.PhasePaused, 30*time.Second)
	patch := []byte(`[{"op":"remove","path":"/metadata/labels/vane.io~1canary"}]`)
	d := &appsv1.Deployment{}
	d.Namespace, d.Name = a.ns, a.name
	if err := a.c.Client.Patch(context.Background(), d, client.RawPatch(types.JSONPatchType, patch)); err != nil {
		t.Fatal(err)
	}
	a.waitAvailable("v2")
	framework.WaitFor(t, 30*time.Second, "the canary removed", func(context.Context) (bool, error) { return a.canaryGone(), nil })
	if o := a.observeNow(); o.canaryWeight != 0 || o.stableWeight != 100 {
		t.Errorf("routes after opting out: %s, want all on stable", o.routes())
	}
	got := a.deployment()
	if len(got.Finalizers) != 0 {
		t.Errorf("finalizers left: %v", got.Finalizers)
	}
	if st, _ := api.StatusFrom(got.Annotations); st == nil || st.Phase != api.PhaseHealthy || st.StableVersion != "v2" {
		t.Errorf("status %+v, want Healthy on v2 (rolled out natively)", st)
	}
	if ev := strings.Join(a.events(), "\n"); !strings.Contains(ev, "RolloutOptedOut: opted out during the release of v2") {
		t.Errorf("no RolloutOptedOut event:\n%s", ev)
	}
}

// TestContendedRoutes: two opted-in Deployments whose strategies name the
// same VirtualService route (a copy-paste). The release that started first
// holds the route; the other waits, Degraded, naming it, and moves no
// weight until the first ends; then it runs.
func TestContendedRoutes(t *testing.T) {
	steps := "- setWeight: 20\n- pause: {}\n"
	a := givenApp(t, 1, steps)
	b := &app{t: t, c: a.c, ns: a.ns, name: "dubbo3-provider-b"}
	b.apply(strings.Replace(providerYAML(a.ns, 1, steps), "name: dubbo3-provider\n", "name: dubbo3-provider-b\n", 1))
	b.waitAvailable("v1")
	b.waitAdopted("v1")

	a.whenVersionEdited("v2")
	a.waitPhase(api.PhasePaused, 30*time.Second)
	b.whenVersionEdited("v2")
	st := b.waitPhase(api.PhaseDegraded, 30*time.Second)
	if !strings.Contains(st.Message, "route test-v1 of VirtualService provider is in use by another release: the release of dubbo3-provider (cluster primary)") {
		t.Errorf("message %q, want it to name the route and the release holding it", st.Message)
	}
	time.Sleep(2 * time.Second)
	if w := a.observeNow().canaryWeight; w != 20 {
		t.Errorf("weight %d while the first release holds it at 20", w)
	}
	if b.canary() != nil {
		t.Error("the waiting release created its canary")
	}

	a.whenAction(api.ActionPromote)
	a.waitPhase(api.PhaseHealthy, 60*time.Second)
	b.waitPhase(api.PhasePaused, 60*time.Second)
	b.whenAction(api.ActionPromote)
	b.waitPhase(api.PhaseHealthy, 60*time.Second)
	b.waitAvailable("v2")
}
