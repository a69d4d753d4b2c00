package canary

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vane-io/vane/internal/api"
	"github.com/vane-io/vane/internal/routes"
)

var t0 = time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

func weight(w int32) api.Step { return api.Step{SetWeight: &w} }
func pauseFor(d time.Duration) api.Step {
	return api.Step{Pause: &api.Pause{Duration: &d}}
}
func pauseForever() api.Step { return api.Step{Pause: &api.Pause{}} }

// istio is the seed's routing: a release split by a mesh.
var istio = api.IstioRouting{VirtualService: "provider", Routes: []string{"test-v1"}, DestinationRule: "dubbo-provider", StableSubset: "stable", CanarySubset: "canary"}

// seedPlan is the seed's weight strategy with pauses shortened.
var seedPlan = &api.Plan{Istio: istio, Steps: []api.Step{weight(5), pauseFor(10 * time.Second), weight(50), pauseFor(10 * time.Second)}}

func TestNext(t *testing.T) {
	at := func(d time.Duration) *metav1.MicroTime { return &metav1.MicroTime{Time: t0.Add(d)} }
	start := api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: 4, StepStartedAt: at(0)}
	step := func(i, w int32, started time.Duration) api.Status {
		s := start
		s.CurrentStepIndex, s.CanaryWeight, s.StepStartedAt = i, w, at(started)
		return s
	}
	split := func(stable, canary string, w int32) routes.Split {
		return routes.Split{StableVersion: stable, CanaryVersion: canary, CanaryWeight: w}
	}
	ready := func(n int32) *CanaryObservation { return &CanaryObservation{Replicas: n, Ready: true} }
	cases := map[string]struct {
		st        api.Status
		plan      *api.Plan
		obs       Observation
		now       time.Duration
		wantPhase api.Phase
		wantStep  int32
		wantAct   Action
	}{
		"first move points the subsets at both versions, canary at weight 0": {
			st: start, obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Split: split("", "", 0)},
			wantPhase: api.PhaseProgressing,
			wantAct:   Action{Split: ptr(split("v1", "v2", 0))},
		},
		"stable subset is not narrowed to a version with no available pods": {
			st: start, obs: Observation{Replicas: 4, StableAvailable: 0, Paused: true, Split: split("", "", 0)},
			wantPhase: api.PhaseProgressing,
		},
		"a canary carrying traffic is drained before its subset changes": {
			st: start, obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(2), Split: split("v1", "v2-old", 50)},
			wantPhase: api.PhaseProgressing,
			wantAct:   Action{Split: ptr(split("v1", "v2-old", 0))},
		},
		"setWeight creates the canary sized ceil(5% of 4) = 1": {
			st: start, obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Split: split("v1", "v2", 0)},
			wantPhase: api.PhaseProgressing,
			wantAct:   Action{CanaryReplicas: ptr[int32](1)},
		},
		"setWeight waits for canary pods before any traffic": {
			st: start, obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: &CanaryObservation{Replicas: 1}, Split: split("v1", "v2", 0)},
			wantPhase: api.PhaseProgressing,
			wantAct:   Action{CanaryReplicas: ptr[int32](1)},
		},
		"setWeight writes the weight once the canary is ready and advances": {
			st: start, obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(1), Split: split("v1", "v2", 0)},
			now: 3 * time.Second, wantPhase: api.PhaseProgressing, wantStep: 1,
			wantAct: Action{Split: ptr(split("v1", "v2", 5)), Events: []Event{
				{ReasonStepAdvanced, "step 1/4 done: setWeight 5"},
			}},
		},
		"a lower weight is written before the canary shrinks": {
			st: step(0, 50, 0), plan: &api.Plan{Istio: istio, Steps: []api.Step{weight(10)}},
			obs:       Observation{Replicas: 10, StableAvailable: 10, Paused: true, Canary: ready(5), Split: split("v1", "v2", 50)},
			wantPhase: api.PhaseProgressing,
			wantAct:   Action{Split: ptr(split("v1", "v2", 10))},
		},
		"timed pause waits the remaining time": {
			st: step(1, 5, 3*time.Second), obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(1), Split: split("v1", "v2", 5)},
			now: 5 * time.Second, wantPhase: api.PhaseProgressing, wantStep: 1,
			wantAct: Action{RequeueAfter: 8 * time.Second},
		},
		"timed pause ends on time": {
			st: step(1, 5, 3*time.Second), obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(1), Split: split("v1", "v2", 5)},
			now: 13 * time.Second, wantPhase: api.PhaseProgressing, wantStep: 2,
			wantAct: Action{Events: []Event{{ReasonStepAdvanced, "step 2/4 done: pause 10s"}}},
		},
		"indefinite pause waits for a person": {
			st: step(1, 5, 0), plan: &api.Plan{Istio: istio, Steps: []api.Step{weight(5), pauseForever()}},
			obs:       Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(1), Split: split("v1", "v2", 5)},
			now:       time.Hour,
			wantPhase: api.PhasePaused, wantStep: 1,
		},
		"degraded release resumes as progressing": {
			st:  func() api.Status { s := step(1, 5, 0); s.Phase = api.PhaseDegraded; return s }(),
			obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(1), Split: split("v1", "v2", 5)},
			now: time.Second, wantPhase: api.PhaseProgressing, wantStep: 1,
			wantAct: Action{RequeueAfter: 9 * time.Second},
		},
		"promotion scales the canary to full size first": {
			st: step(4, 50, 0), obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(2), Split: split("v1", "v2", 50)},
			wantPhase: api.PhasePromoting, wantStep: 4,
			wantAct: Action{CanaryReplicas: ptr[int32](4)},
		},
		"promotion sends all traffic to the full canary": {
			st: step(4, 50, 0), obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(4), Split: split("v1", "v2", 50)},
			wantPhase: api.PhasePromoting, wantStep: 4,
			wantAct: Action{Split: ptr(split("v1", "v2", 100))},
		},
		"promotion widens the stable pool before the native rollout": {
			st: step(4, 100, 0), obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(4), Split: split("v1", "v2", 100)},
			wantPhase: api.PhasePromoting, wantStep: 4,
			wantAct: Action{Split: ptr(split("", "v2", 100))},
		},
		"promotion unpauses the original once stable is widened": {
			st: step(4, 100, 0), obs: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(4), Split: split("", "v2", 100)},
			wantPhase: api.PhasePromoting, wantStep: 4,
			wantAct: Action{Unpause: true, Events: []Event{{ReasonPromoting, "rolling out v2 natively"}}},
		},
		"a widened stable pool is not narrowed back during promotion": {
			st: step(4, 100, 0), obs: Observation{Replicas: 4, StableAvailable: 2, Canary: ready(4), Split: split("", "v2", 100)},
			wantPhase: api.PhasePromoting, wantStep: 4,
		},
		"promotion waits for the native rollout": {
			st: step(4, 100, 0), obs: Observation{Replicas: 4, StableAvailable: 2, Canary: ready(4), Split: split("v1", "v2", 100)},
			wantPhase: api.PhasePromoting, wantStep: 4,
		},
		"promotion moves the stable subset while it carries no traffic": {
			st: step(4, 100, 0), obs: Observation{Replicas: 4, StableAvailable: 4, Rolled: true, Canary: ready(4), Split: split("v1", "v2", 100)},
			wantPhase: api.PhasePromoting, wantStep: 4,
			wantAct: Action{Split: ptr(split("v2", "v2", 100))},
		},
		"promotion returns traffic to the moved stable": {
			st: step(4, 100, 0), obs: Observation{Replicas: 4, StableAvailable: 4, Rolled: true, Canary: ready(4), Split: split("v2", "v2", 100)},
			wantPhase: api.PhasePromoting, wantStep: 4,
			wantAct: Action{Split: ptr(split("v2", "v2", 0))},
		},
		"promotion ends: canary deleted, healthy": {
			st: step(4, 0, 0), obs: Observation{Replicas: 4, StableAvailable: 4, Rolled: true, Canary: ready(4), Split: split("v2", "v2", 0)},
			now: time.Minute, wantPhase: api.PhaseHealthy, wantStep: 4,
			wantAct: Action{DeleteCanary: true, Done: true, Events: []Event{{ReasonRolloutCompleted, "release of v2 complete: all traffic on stable"}}},
		},
		"rollback drains the canary first": {
			st:   api.Status{Phase: api.PhaseRollingBack, StableVersion: "v1", CanaryVersion: "v2", CanaryWeight: 50},
			obs:  Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(2), Split: split("v1", "v2", 50)},
			plan: seedPlan, wantPhase: api.PhaseRollingBack,
			wantAct: Action{Split: ptr(split("v1", "v2", 0))},
		},
		"rollback removes the canary and resumes the original": {
			st:   api.Status{Phase: api.PhaseRollingBack, StableVersion: "v1", CanaryVersion: "v2"},
			obs:  Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: ready(2), Split: split("v1", "v2", 0)},
			plan: seedPlan, wantPhase: api.PhaseHealthy, wantStep: 4,
			wantAct: Action{DeleteCanary: true, Unpause: true, Done: true, Split: ptr(split("v1", "v1", 0)), Events: []Event{{ReasonRolledBack, "rolled back to v1: all traffic on stable"}}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			plan := tc.plan
			if plan == nil {
				plan = seedPlan
			}
			got, act := Next(tc.st, plan, tc.obs, t0.Add(tc.now))
			if got.Phase != tc.wantPhase || got.CurrentStepIndex != tc.wantStep {
				t.Errorf("phase, step = %s, %d; want %s, %d (message %q)", got.Phase, got.CurrentStepIndex, tc.wantPhase, tc.wantStep, got.Message)
			}
			if diff := cmp.Diff(tc.wantAct, act); diff != "" {
				t.Errorf("action (-want,+got):\n%s", diff)
			}
		})
	}
}

func TestCanaryReplicas(t *testing.T) {
	for _, tc := range []struct{ weight, replicas, want int32 }{
		{5, 1, 1}, {5, 4, 1}, {50, 4, 2}, {51, 4, 3}, {100, 4, 4}, {0, 4, 1}, {25, 4, 1}, {10, 10, 1}, {11, 10, 2}, {100, 0, 1},
	} {
		if got := CanaryReplicas(tc.weight, tc.replicas); got != tc.want {
			t.Errorf("CanaryReplicas(%d, %d) = %d, want %d", tc.weight, tc.replicas, got, tc.want)
		}
	}
}

// world is a simulated cluster that carries out actions at once, except the
// pods, which become available only on the next tick.
type world struct {
	replicas      int32
	paused        bool
	origVersion   string // version of the original's available pods
	canary        *CanaryObservation
	canaryReady   int32 // available canary pods
	canaryVersion string
	split         routes.Split
}

func (w *world) observe() Observation {
	obs := Observation{Replicas: w.replicas, Paused: w.paused, Split: w.split, StableAvailable: w.replicas}
	obs.Rolled = !w.paused && w.origVersion == "v2"
	if w.canary != nil {
		c := *w.canary
		obs.Canary = &c
	}
	return obs
}

// readyPods counts available pods behind a subset that selects version.
func (w *world) readyPods(version string) int32 {
	n := int32(0)
	if version == "" || version == w.origVersion {
		n += w.replicas
	}
	if w.canary != nil && (version == "" || version == w.canaryVersion) {
		n += w.canaryReady
	}
	return n
}

func (w *world) tick() {
	if w.canary != nil {
		w.canaryReady, w.canary.Ready = w.canary.Replicas, true
	}
	if !w.paused {
		w.origVersion = "v2"
	}
}

func (w *world) apply(t *testing.T, act Action) {
	// A resized canary keeps the pods it has; new ones come up on the next tick.
	if act.CanaryReplicas != nil && (w.canary == nil || w.canary.Replicas != *act.CanaryReplicas) {
		w.canary = &CanaryObservation{Replicas: *act.CanaryReplicas}
		w.canaryVersion, w.canaryReady = "v2", min(w.canaryReady, *act.CanaryReplicas)
	}
	if act.Split != nil {
		w.split = *act.Split
	}
	if act.DeleteCanary {
		w.canary, w.canaryReady = nil, 0
	}
	if act.Unpause {
		w.paused = false
	}
	// The invariant: no weight on a subset without available pods.
	if w.split.CanaryWeight > 0 && w.readyPods(w.split.CanaryVersion) == 0 {
		t.Fatalf("canary weight %d on subset %q with no available pods", w.split.CanaryWeight, w.split.CanaryVersion)
	}
	if w.split.CanaryWeight < 100 && w.readyPods(w.split.StableVersion) == 0 {
		t.Fatalf("stable weight %d on subset %q with no available pods", 100-w.split.CanaryWeight, w.split.StableVersion)
	}
}

// TestNextWalksTheSeedRelease drives a whole release through the simulated
// world: weights in order, pauses honoured, never traffic to an empty subset.
func TestNextWalksTheSeedRelease(t *testing.T) {
	w := &world{replicas: 3, paused: true, origVersion: "v1", split: routes.Split{}}
	_, weights, events := walk(t, w, seedPlan, "")
	if !w.split.Equal(routes.Split{StableVersion: "v2", CanaryVersion: "v2"}) {
		t.Errorf("final split %+v, want all on v2", w.split)
	}
	if diff := cmp.Diff([]int32{0, 5, 50, 100, 0}, weights); diff != "" {
		t.Errorf("weights written (-want,+got):\n%s", diff)
	}
	wantEvents := []string{
		"StepAdvanced: step 1/4 done: setWeight 5",
		"StepAdvanced: step 2/4 done: pause 10s",
		"StepAdvanced: step 3/4 done: setWeight 50",
		"StepAdvanced: step 4/4 done: pause 10s",
		"Promoting: rolling out v2 natively",
		"RolloutCompleted: release of v2 complete: all traffic on stable",
	}
	if diff := cmp.Diff(wantEvents, events); diff != "" {
		t.Errorf("events (-want,+got):\n%s", diff)
	}
}

var lane = api.HeaderRoute{Name: "test-v2", Match: []api.HeaderMatch{{Name: "lane", Exact: "test-v2"}}}

// headerPlan is the seed's header strategy.
var headerPlan = &api.Plan{Istio: istio, Steps: []api.Step{
	{SetCanaryScale: &api.CanaryScale{Weight: ptr[int32](100)}},
	{SetHeaderRoute: &lane},
	pauseForever(),
}}

func TestNextHeadersScaleAndActions(t *testing.T) {
	at := &metav1.MicroTime{Time: t0}
	status := func(phase api.Phase, step, weight int32) api.Status {
		return api.Status{Phase: phase, StableVersion: "v1", CanaryVersion: "v2", CurrentStepIndex: step, StepCount: 3, CanaryWeight: weight, StepStartedAt: at}
	}
	split := func(w int32, headers ...api.HeaderRoute) routes.Split {
		return routes.Split{StableVersion: "v1", CanaryVersion: "v2", CanaryWeight: w, HeaderRoutes: headers}
	}
	ready := func(n int32) *CanaryObservation { return &CanaryObservation{Replicas: n, Ready: true} }
	obs := func(canary *CanaryObservation, s routes.Split, action api.Action) Observation {
		return Observation{Replicas: 3, StableAvailable: 3, Paused: true, Canary: canary, Split: s, Action: action}
	}
	cases := map[string]struct {
		st        api.Status
		plan      *api.Plan
		obs       Observation
		wantPhase api.Phase
		wantStep  int32
		wantAct   Action
	}{
		"setCanaryScale weight 100 sizes the canary to all replicas": {
			st: status(api.PhaseProgressing, 0, 0), plan: headerPlan, obs: obs(nil, split(0), ""),
			wantPhase: api.PhaseProgressing, wantAct: Action{CanaryReplicas: ptr[int32](3)},
		},
		"setCanaryScale advances once the canary is ready": {
			st: status(api.PhaseProgressing, 0, 0), plan: headerPlan, obs: obs(ready(3), split(0), ""),
			wantPhase: api.PhaseProgressing, wantStep: 1,
			wantAct: Action{Events: []Event{{ReasonStepAdvanced, "step 1/3 done: canary scaled to 3 replicas"}}},
		},
		"setHeaderRoute waits for the canary's pods": {
			st: status(api.PhaseProgressing, 1, 0), plan: headerPlan, obs: obs(&CanaryObservation{Replicas: 3}, split(0), ""),
			wantPhase: api.PhaseProgressing, wantStep: 1, wantAct: Action{CanaryReplicas: ptr[int32](3)},
		},
		"setHeaderRoute writes the lane route": {
			st: status(api.PhaseProgressing, 1, 0), plan: headerPlan, obs: obs(ready(3), split(0), ""),
			wantPhase: api.PhaseProgressing, wantStep: 2,
			wantAct: Action{Split: ptr(split(0, lane)), Events: []Event{{ReasonStepAdvanced, "step 2/3 done: setHeaderRoute test-v2"}}},
		},
		"setHeaderRoute without match removes it at once": {
			st:   status(api.PhaseProgressing, 1, 0),
			plan: &api.Plan{Istio: istio, Steps: []api.Step{{SetHeaderRoute: &lane}, {SetHeaderRoute: &api.HeaderRoute{Name: "test-v2"}}, weight(10)}},
			obs:  obs(nil, split(0, lane), ""), wantPhase: api.PhaseProgressing, wantStep: 2,
			wantAct: Action{Split: ptr(split(0)), Events: []Event{{ReasonStepAdvanced, "step 2/3 done: setHeaderRoute test-v2 (removed)"}}},
		},
		"setWeight keeps the header routes of earlier steps": {
			st:   status(api.PhaseProgressing, 1, 0),
			plan: &api.Plan{Istio: istio, Steps: []api.Step{{SetHeaderRoute: &lane}, weight(50)}},
			obs:  obs(ready(2), split(0, lane), ""), wantPhase: api.PhaseProgressing, wantStep: 2,
			wantAct: Action{Split: ptr(split(50, lane)), Events: []Event{{ReasonStepAdvanced, "step 2/2 done: setWeight 50"}}},
		},
		"pause waits for a person and keeps the canary sized": {
			st: status(api.PhaseProgressing, 2, 0), plan: headerPlan, obs: obs(ready(3), split(0, lane), ""),
			wantPhase: api.PhasePaused, wantStep: 2,
		},
		"pause follows a scale of the original": {
			st: status(api.PhasePaused, 2, 0), plan: headerPlan,
			obs:       Observation{Replicas: 6, StableAvailable: 6, Paused: true, Canary: ready(3), Split: split(0, lane)},
			wantPhase: api.PhasePaused, wantStep: 2, wantAct: Action{CanaryReplicas: ptr[int32](6)},
		},
		"promote ends the pause": {
			st: status(api.PhasePaused, 2, 0), plan: headerPlan, obs: obs(ready(3), split(0, lane), api.ActionPromote),
			wantPhase: api.PhaseProgressing, wantStep: 3,
			wantAct: Action{ClearAction: true, Events: []Event{{ReasonStepAdvanced, "step 3/3 done: promoted"}, {ReasonPromoted, "pause at step 3/3 ended by a person"}}},
		},
		"promote outside a pause is reported and cleared": {
			st: status(api.PhaseProgressing, 0, 0), plan: headerPlan, obs: obs(nil, split(0), api.ActionPromote),
			wantPhase: api.PhaseProgressing, wantStep: 0,
			wantAct: Action{ClearAction: true, Events: []Event{{ReasonActionIgnored, "action promote ignored: the release is not paused (phase Progressing, step 0/3)"}}},
		},
		"promote-full skips the remaining steps": {
			st: status(api.PhaseProgressing, 1, 0), plan: headerPlan, obs: obs(ready(3), split(0), api.ActionPromoteFull),
			wantPhase: api.PhaseProgressing, wantStep: 3,
			wantAct: Action{ClearAction: true, Events: []Event{{ReasonPromoted, "promoted in full: steps 2 to 3 skipped"}}},
		},
		"abort sends all traffic and header routes to stable at once": {
			st: status(api.PhasePaused, 2, 30), plan: headerPlan, obs: obs(ready(3), split(30, lane), api.ActionAbort),
			wantPhase: api.PhaseAborted, wantStep: 2,
			wantAct: Action{Split: ptr(split(0)), ClearAction: true, Events: []Event{{ReasonAborted, "aborted at step 2/3: all traffic to stable v1, canary v2 removed"}}},
		},
		"aborted: the canary pool returns to stable once it carries no traffic": {
			st: status(api.PhaseAborted, 2, 0), plan: headerPlan, obs: obs(ready(3), split(0), ""),
			wantPhase: api.PhaseAborted, wantStep: 2, wantAct: Action{Split: &routes.Split{StableVersion: "v1", CanaryVersion: "v1"}},
		},
		"aborted: the canary goes once both pools select stable": {
			st: status(api.PhaseAborted, 2, 0), plan: headerPlan, obs: obs(ready(3), routes.Split{StableVersion: "v1", CanaryVersion: "v1"}, ""),
			wantPhase: api.PhaseAborted, wantStep: 2, wantAct: Action{DeleteCanary: true},
		},
		"aborted stays put": {
			st: status(api.PhaseAborted, 2, 0), plan: headerPlan, obs: obs(nil, routes.Split{StableVersion: "v1", CanaryVersion: "v1"}, ""),
			wantPhase: api.PhaseAborted, wantStep: 2,
		},
		"retry after an abort points the canary pool at the new version again": {
			st: status(api.PhaseProgressing, 0, 0), plan: headerPlan, obs: obs(nil, routes.Split{StableVersion: "v1", CanaryVersion: "v1"}, ""),
			wantPhase: api.PhaseProgressing, wantAct: Action{Split: ptr(split(0))},
		},
		"abort after the original rolled out is refused": {
			st:        status(api.PhasePromoting, 3, 100),
			plan:      headerPlan,
			obs:       Observation{Replicas: 3, StableAvailable: 3, Canary: ready(3), Split: split(100), Action: api.ActionAbort},
			wantPhase: api.PhasePromoting, wantStep: 3,
			wantAct: Action{ClearAction: true, Events: []Event{{ReasonActionIgnored, "action abort ignored: the release is Promoting; to go back, edit the version to v1"}}},
		},
		"retry restarts an aborted release": {
			st: status(api.PhaseAborted, 2, 0), plan: headerPlan, obs: obs(&CanaryObservation{Replicas: 0, Ready: true}, split(0), api.ActionRetry),
			wantPhase: api.PhaseProgressing, wantStep: 0,
			wantAct: Action{ClearAction: true, Events: []Event{{ReasonRetried, "release of v2 retried from step 0"}}},
		},
		"retry of a running release is reported": {
			st: status(api.PhasePaused, 2, 0), plan: headerPlan, obs: obs(ready(3), split(0, lane), api.ActionRetry),
			wantPhase: api.PhasePaused, wantStep: 2,
			wantAct: Action{ClearAction: true, Events: []Event{{ReasonActionIgnored, "action retry ignored: only an aborted release can be retried"}}},
		},
		"promotion removes header routes with the last weight": {
			st:        api.Status{Phase: api.PhasePromoting, StableVersion: "v2", CanaryVersion: "v2", CurrentStepIndex: 3, StepCount: 3, CanaryWeight: 100},
			plan:      headerPlan,
			obs:       Observation{Replicas: 3, StableAvailable: 3, Rolled: true, Canary: ready(3), Split: routes.Split{StableVersion: "v2", CanaryVersion: "v2", CanaryWeight: 100, HeaderRoutes: []api.HeaderRoute{lane}}},
			wantPhase: api.PhasePromoting, wantStep: 3,
			wantAct: Action{Split: &routes.Split{StableVersion: "v2", CanaryVersion: "v2"}},
		},
		"a new canary version drains header routes too": {
			st:   api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v3", StepCount: 3},
			plan: headerPlan, obs: obs(ready(3), split(0, lane), ""),
			wantPhase: api.PhaseProgressing,
			wantAct:   Action{Split: ptr(split(0))},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, act := Next(tc.st, tc.plan, tc.obs, t0)
			if got.Phase != tc.wantPhase || got.CurrentStepIndex != tc.wantStep {
				t.Errorf("phase, step = %s, %d; want %s, %d (message %q)", got.Phase, got.CurrentStepIndex, tc.wantPhase, tc.wantStep, got.Message)
			}
			if diff := cmp.Diff(tc.wantAct, act); diff != "" {
				t.Errorf("action (-want,+got):\n%s", diff)
			}
		})
	}
}

func TestHeaderRoutesAndScaleAt(t *testing.T) {
	other := api.HeaderRoute{Name: "b", Match: []api.HeaderMatch{{Name: "x", Exact: "1"}}}
	changed := lane
	changed.Match = []api.HeaderMatch{{Name: "lane", Prefix: "test"}}
	plan := &api.Plan{Istio: istio, Steps: []api.Step{
		{SetHeaderRoute: &lane}, {SetHeaderRoute: &other}, {SetHeaderRoute: &changed},
		{SetCanaryScale: &api.CanaryScale{Replicas: ptr[int32](2)}},
		{SetHeaderRoute: &api.HeaderRoute{Name: "test-v2"}},
		{SetCanaryScale: &api.CanaryScale{MatchTrafficWeight: true}},
	}}
	for i, want := range [][]api.HeaderRoute{nil, {lane}, {lane, other}, {changed, other}, {changed, other}, {other}, {other}} {
		if diff := cmp.Diff(want, HeaderRoutesAt(plan, int32(i))); diff != "" {
			t.Errorf("HeaderRoutesAt(%d) (-want,+got):\n%s", i, diff)
		}
	}
	for i, want := range []*api.CanaryScale{nil, nil, nil, nil, {Replicas: ptr[int32](2)}, {Replicas: ptr[int32](2)}, nil} {
		if diff := cmp.Diff(want, CanaryScaleAt(plan, int32(i))); diff != "" {
			t.Errorf("CanaryScaleAt(%d) (-want,+got):\n%s", i, diff)
		}
	}
	if got := desiredReplicas(&api.CanaryScale{Replicas: ptr[int32](0)}, 0, []api.HeaderRoute{lane}, 4); got != 1 {
		t.Errorf("a canary with a header route got %d replicas, want at least 1", got)
	}
	if got := desiredReplicas(&api.CanaryScale{Replicas: ptr[int32](0)}, 0, nil, 4); got != 0 {
		t.Errorf("a canary with no traffic and replicas: 0 got %d replicas", got)
	}
}

// walk drives a release through the simulated world until it is Healthy;
// person answers a manual gate. It returns the canary sizes and weights
// seen, one entry per change, the route weights written, and the events.
func walk(t *testing.T, w *world, plan *api.Plan, person api.Action) (sizes []string, weights []int32, events []string) {
	t.Helper()
	st := api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: int32(len(plan.Steps)), StepStartedAt: &metav1.MicroTime{Time: t0}}
	now := t0
	for i := 0; i < 100 && st.Phase != api.PhaseHealthy; i++ {
		obs := w.observe()
		if st.Phase == api.PhasePaused {
			obs.Action = person
		}
		next, act := Next(st, plan, obs, now)
		w.apply(t, act)
		if act.Split != nil && (len(weights) == 0 || weights[len(weights)-1] != act.Split.CanaryWeight) {
			weights = append(weights, act.Split.CanaryWeight)
		}
		canary := int32(0)
		if w.canary != nil {
			canary = w.canary.Replicas
		}
		size := fmt.Sprintf("canary %d, status weight %d, route weight %d", canary, next.CanaryWeight, w.split.CanaryWeight)
		if len(sizes) == 0 || sizes[len(sizes)-1] != size {
			sizes = append(sizes, size)
		}
		for _, e := range act.Events {
			events = append(events, fmt.Sprintf("%s: %s", e.Reason, e.Message))
		}
		st = next
		now = now.Add(time.Second + act.RequeueAfter)
		w.tick()
	}
	if st.Phase != api.PhaseHealthy || st.StableVersion != "v2" {
		t.Fatalf("release did not end healthy on v2: %+v", st)
	}
	if w.canary != nil || w.paused {
		t.Errorf("final world: canary %v, paused %v", w.canary, w.paused)
	}
	return sizes, weights, events
}
