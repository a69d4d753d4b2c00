package canary

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vane-io/vane/internal/api"
	"github.com/vane-io/vane/internal/routes"
)

func TestRatioReplicas(t *testing.T) {
	cases := map[string]struct {
		weight, replicas int32
		want             int32
		wantEffective    int32
	}{
		"the issue's case: 25% of 4 is one pod, 20%":          {25, 4, 1, 20},
		"0% runs no canary pod":                               {0, 4, 0, 0},
		"a tiny weight still gets one pod":                    {1, 10, 1, 9},
		"1% of 100 is one pod":                                {1, 100, 1, 1},
		"5% of 2 is one pod, 33%":                             {5, 2, 1, 33},
		"10% of 9 is one pod, exactly 10%":                    {10, 9, 1, 10},
		"10% of 10 is one pod, 9%":                            {10, 10, 1, 9},
		"10% of 20 is two pods, 9%":                           {10, 20, 2, 9},
		"20% of 4 is one pod, exactly 20%":                    {20, 4, 1, 20},
		"20% of 10: 3 (23.1%) is closer than 2 (16.7%)":       {20, 10, 3, 23},
		"25% of 3 is one pod, exactly 25%":                    {25, 3, 1, 25},
		"30% of 4: 2 (33%) is closer than 1 (20%)":            {30, 4, 2, 33},
		"33% of 2 is one pod":                                 {33, 2, 1, 33},
		"40% of 2: 1 (33%) is closer than 2 (50%)":            {40, 2, 1, 33},
		"40% of 6: 4 pods, exactly 40%":                       {40, 6, 4, 40},
		"45% of 4: 3 (43%) is closer than 4 (50%)":            {45, 4, 3, 43},
		"49% of 100: 96 pods":                                 {49, 100, 96, 49},
		"50% is as many canary pods as stable ones":           {50, 4, 4, 50},
		"above 50% the canary stops at the Deployment's size": {80, 4, 4, 50},
		"100% too": {100, 3, 3, 50},
		"one replica: any weight is one pod, 50%":              {5, 1, 1, 50},
		"a Deployment scaled to zero still gets one pod":       {25, 0, 1, 100},
		"a tie goes to fewer pods (1: 20%, 2: 33%, at 26.67%)": {27, 4, 2, 33},
		"just below the tie":                                   {26, 4, 1, 20},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := RatioReplicas(tc.weight, tc.replicas)
			eff := EffectiveWeight(got, tc.replicas)
			if diff := cmp.Diff([2]int32{tc.want, tc.wantEffective}, [2]int32{got, eff}); diff != "" {
				t.Errorf("RatioReplicas(%d, %d), effective weight (-want,+got):\n%s", tc.weight, tc.replicas, diff)
			}
		})
	}
}

// RatioReplicas agrees with a search over every size, for every weight and
// Deployment size up to 60.
func TestRatioReplicasIsClosest(t *testing.T) {
	for r := int32(1); r <= 60; r++ {
		for w := int32(1); w <= 100; w++ {
			best, bestDist := int32(0), math.Inf(1)
			for n := int32(1); n <= r; n++ {
				d := math.Abs(float64(n)/float64(n+r) - float64(w)/100)
				if d < bestDist-1e-12 {
					best, bestDist = n, d
				}
			}
			if got := RatioReplicas(w, r); got != best {
				t.Fatalf("RatioReplicas(%d, %d) = %d, want %d", w, r, got, best)
			}
		}
	}
}

func TestEffectiveWeight(t *testing.T) {
	for _, tc := range []struct{ canary, replicas, want int32 }{
		{0, 4, 0}, {1, 4, 20}, {1, 2, 33}, {2, 4, 33}, {1, 1, 50}, {2, 1, 67}, {1, 7, 13}, {1, 199, 1}, {1, 0, 100}, {0, 0, 0},
	} {
		if got := EffectiveWeight(tc.canary, tc.replicas); got != tc.want {
			t.Errorf("EffectiveWeight(%d, %d) = %d, want %d", tc.canary, tc.replicas, got, tc.want)
		}
	}
}

func TestPodsAt(t *testing.T) {
	scale := func(n int32) api.Step { return api.Step{SetCanaryScale: &api.CanaryScale{Replicas: &n}} }
	percent := func(p int32) api.Step { return api.Step{SetCanaryScale: &api.CanaryScale{Weight: &p}} }
	match := api.Step{SetCanaryScale: &api.CanaryScale{MatchTrafficWeight: true}}
	plan := &api.Plan{Steps: []api.Step{weight(25), pauseForever(), scale(3), pauseFor(time.Minute), percent(50), weight(10), match, percent(1)}}
	// Before each step, on 4 replicas.
	want := []int32{0, 1, 1, 3, 3, 2, 1, 1, 1}
	for i, w := range want {
		if got := PodsAt(plan, int32(i), 4); got != w {
			t.Errorf("PodsAt(%d) = %d, want %d", i, got, w)
		}
	}
}

// meshless is the canary without a mesh: 25% on 4 replicas, a
// manual gate, then a batch of half the Deployment.
var meshless = &api.Plan{Steps: []api.Step{weight(25), pauseForever(), {SetCanaryScale: &api.CanaryScale{Weight: ptr[int32](50)}}, pauseFor(10 * time.Second)}}

func TestNextWithoutMesh(t *testing.T) {
	status := func(phase api.Phase, step, w int32) api.Status {
		return api.Status{Phase: phase, StableVersion: "v1", CanaryVersion: "v2", CurrentStepIndex: step, StepCount: 4, CanaryWeight: w, StepStartedAt: &metav1.MicroTime{Time: t0}}
	}
	ready := func(n int32) *CanaryObservation { return &CanaryObservation{Replicas: n, Ready: true} }
	obs := func(c *CanaryObservation, action api.Action) Observation {
		return Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: c, Action: action}
	}
	cases := map[string]struct {
		st         api.Status
		obs        Observation
		wantPhase  api.Phase
		wantStep   int32
		wantWeight int32
		wantAct    Action
	}{
		"setWeight 25 creates one canary pod, no route to point": {
			st: status(api.PhaseProgressing, 0, 0), obs: obs(nil, ""),
			wantPhase: api.PhaseProgressing, wantAct: Action{CanaryReplicas: ptr[int32](1)},
		},
		"setWeight waits for the pod, weight still 0": {
			st: status(api.PhaseProgressing, 0, 0), obs: obs(&CanaryObservation{Replicas: 1}, ""),
			wantPhase: api.PhaseProgressing, wantAct: Action{CanaryReplicas: ptr[int32](1)},
		},
		"setWeight advances with the effective weight once the pod is ready": {
			st: status(api.PhaseProgressing, 0, 0), obs: obs(ready(1), ""),
			wantPhase: api.PhaseProgressing, wantStep: 1, wantWeight: 20,
			wantAct: Action{Events: []Event{{ReasonStepAdvanced, "step 1/4 done: setWeight 25: 1 canary pod beside 4 stable, 20% of the traffic"}}},
		},
		"the manual gate waits at 20%": {
			st: status(api.PhaseProgressing, 1, 20), obs: obs(ready(1), ""),
			wantPhase: api.PhasePaused, wantStep: 1, wantWeight: 20,
		},
		"the gate follows a scale of the original: 25% of 8 is three pods, 27%": {
			st:        status(api.PhasePaused, 1, 20),
			obs:       Observation{Replicas: 8, StableAvailable: 8, Paused: true, Canary: ready(1)},
			wantPhase: api.PhasePaused, wantStep: 1, wantWeight: 27,
			wantAct: Action{CanaryReplicas: ptr[int32](3)},
		},
		"promote ends the gate": {
			st: status(api.PhasePaused, 1, 20), obs: obs(ready(1), api.ActionPromote),
			wantPhase: api.PhaseProgressing, wantStep: 2, wantWeight: 20,
			wantAct: Action{ClearAction: true, Events: []Event{{ReasonStepAdvanced, "step 2/4 done: promoted"}, {ReasonPromoted, "pause at step 2/4 ended by a person"}}},
		},
		"a batch of 50% is two pods beside four": {
			st: status(api.PhaseProgressing, 2, 20), obs: obs(ready(1), ""),
			wantPhase: api.PhaseProgressing, wantStep: 2, wantWeight: 20, wantAct: Action{CanaryReplicas: ptr[int32](2)},
		},
		"the batch advances at 33%": {
			st: status(api.PhaseProgressing, 2, 20), obs: obs(ready(2), ""),
			wantPhase: api.PhaseProgressing, wantStep: 3, wantWeight: 33,
			wantAct: Action{Events: []Event{{ReasonStepAdvanced, "step 3/4 done: canary scaled to 2 replicas: 2 canary pods beside 4 stable, 33% of the traffic"}}},
		},
		"promotion rolls the original out natively, canary pods still serving": {
			st: status(api.PhaseProgressing, 4, 33), obs: obs(ready(2), ""),
			wantPhase: api.PhasePromoting, wantStep: 4, wantWeight: 33,
			wantAct: Action{Unpause: true, Events: []Event{{ReasonPromoting, "rolling out v2 natively"}}},
		},
		"promotion waits for the native rollout": {
			st: status(api.PhasePromoting, 4, 33), obs: Observation{Replicas: 4, StableAvailable: 2, Canary: ready(2)},
			wantPhase: api.PhasePromoting, wantStep: 4, wantWeight: 33,
		},
		"promotion ends: the canary goes, no route written": {
			st: status(api.PhasePromoting, 4, 33), obs: Observation{Replicas: 4, StableAvailable: 4, Rolled: true, Canary: ready(2)},
			wantPhase: api.PhaseHealthy, wantStep: 4,
			wantAct: Action{DeleteCanary: true, Done: true, Events: []Event{{ReasonRolloutCompleted, "release of v2 complete: all traffic on stable"}}},
		},
		"abort removes the canary at once: its pods are its traffic": {
			st: status(api.PhasePaused, 1, 20), obs: obs(ready(1), api.ActionAbort),
			wantPhase: api.PhaseAborted, wantStep: 1,
			wantAct: Action{DeleteCanary: true, ClearAction: true, Events: []Event{{ReasonAborted, "aborted at step 1/4: all traffic to stable v1, canary v2 removed"}}},
		},
		"an edit back to stable removes the canary and resumes the original": {
			st:        api.Status{Phase: api.PhaseRollingBack, StableVersion: "v1", CanaryVersion: "v2", CanaryWeight: 20},
			obs:       obs(ready(1), ""),
			wantPhase: api.PhaseHealthy, wantStep: 4,
			wantAct: Action{DeleteCanary: true, Unpause: true, Done: true, Events: []Event{{ReasonRolledBack, "rolled back to v1: all traffic on stable"}}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, act := Next(tc.st, meshless, tc.obs, t0)
			if got.Phase != tc.wantPhase || got.CurrentStepIndex != tc.wantStep || got.CanaryWeight != tc.wantWeight {
				t.Errorf("phase, step, weight = %s, %d, %d; want %s, %d, %d (message %q)", got.Phase, got.CurrentStepIndex, got.CanaryWeight, tc.wantPhase, tc.wantStep, tc.wantWeight, got.Message)
			}
			if diff := cmp.Diff(tc.wantAct, act); diff != "" {
				t.Errorf("action (-want,+got):\n%s", diff)
			}
		})
	}
}

func TestNextWalksAReleaseWithoutMesh(t *testing.T) {
	w := &world{replicas: 4, paused: true, origVersion: "v1"}
	sizes, _, events := walk(t, w, meshless, api.ActionPromote)
	if w.replicas != 4 || !w.split.Equal(routes.Split{}) {
		t.Errorf("the original's replicas %d (want 4, untouched) and split %+v (want none written)", w.replicas, w.split)
	}
	wantSizes := []string{
		"canary 1, status weight 0, route weight 0",
		"canary 1, status weight 20, route weight 0",
		"canary 2, status weight 20, route weight 0",
		"canary 2, status weight 33, route weight 0",
		"canary 0, status weight 0, route weight 0",
	}
	if diff := cmp.Diff(wantSizes, sizes); diff != "" {
		t.Errorf("canary sizes (-want,+got):\n%s", diff)
	}
	wantEvents := []string{
		"StepAdvanced: step 1/4 done: setWeight 25: 1 canary pod beside 4 stable, 20% of the traffic",
		"StepAdvanced: step 2/4 done: promoted",
		"Promoted: pause at step 2/4 ended by a person",
		"StepAdvanced: step 3/4 done: canary scaled to 2 replicas: 2 canary pods beside 4 stable, 33% of the traffic",
		"StepAdvanced: step 4/4 done: pause 10s",
		"Promoting: rolling out v2 natively",
		"RolloutCompleted: release of v2 complete: all traffic on stable",
	}
	if diff := cmp.Diff(wantEvents, events); diff != "" {
		t.Errorf("events (-want,+got):\n%s", diff)
	}
}

// seed004 is seed 004's release of bookinfo reviews with a VirtualService:
// a batch of one pod with 10% of the traffic, then a manual gate.
var seed004 = &api.Plan{Istio: istio, Steps: []api.Step{{SetCanaryScale: &api.CanaryScale{Replicas: ptr[int32](1)}}, weight(10), pauseForever()}}

func TestNextWalksSeed004(t *testing.T) {
	w := &world{replicas: 2, paused: true, origVersion: "v1"}
	sizes, _, events := walk(t, w, seed004, api.ActionPromote)
	wantSizes := []string{
		"canary 0, status weight 0, route weight 0", // the subsets point at v1 and v2
		"canary 1, status weight 0, route weight 0", // batch 1
		"canary 1, status weight 10, route weight 10",
		"canary 2, status weight 10, route weight 10", // promotion: the canary at full size
		"canary 2, status weight 100, route weight 100",
		"canary 2, status weight 0, route weight 0", // stable moved to v2, traffic back to it
		"canary 0, status weight 0, route weight 0",
	}
	if diff := cmp.Diff(wantSizes, sizes); diff != "" {
		t.Errorf("canary sizes and weights (-want,+got):\n%s", diff)
	}
	if !w.split.Equal(routes.Split{StableVersion: "v2", CanaryVersion: "v2"}) {
		t.Errorf("final split %+v, want both subsets on v2, no weight on the canary", w.split)
	}
	wantEvents := []string{
		"StepAdvanced: step 1/3 done: canary scaled to 1 replicas",
		"StepAdvanced: step 2/3 done: setWeight 10",
		"StepAdvanced: step 3/3 done: promoted",
		"Promoted: pause at step 3/3 ended by a person",
		"Promoting: rolling out v2 natively",
		"RolloutCompleted: release of v2 complete: all traffic on stable",
	}
	if diff := cmp.Diff(wantEvents, events); diff != "" {
		t.Errorf("events (-want,+got):\n%s", diff)
	}
}

// Seed 004's rollback by abort: at the gate, every request goes back to v2's
// predecessor, both subsets select only it, the canary goes.
func TestNextSeed004Abort(t *testing.T) {
	w := &world{replicas: 2, paused: true, origVersion: "v1"}
	st := api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: 3, StepStartedAt: &metav1.MicroTime{Time: t0}}
	for i := 0; i < 20 && st.Phase != api.PhasePaused; i++ {
		var act Action
		st, act = Next(st, seed004, w.observe(), t0)
		w.apply(t, act)
		w.tick()
	}
	if st.Phase != api.PhasePaused || w.split.CanaryWeight != 10 {
		t.Fatalf("not at the gate with 10%%: %+v, split %+v", st, w.split)
	}
	obs := w.observe()
	obs.Action = api.ActionAbort
	for i := 0; i < 10; i++ {
		var act Action
		st, act = Next(st, seed004, obs, t0)
		w.apply(t, act)
		w.tick()
		obs = w.observe()
	}
	if st.Phase != api.PhaseAborted || w.canary != nil || !w.paused {
		t.Errorf("after abort: phase %s, canary %v, paused %v; want Aborted, no canary, held", st.Phase, w.canary, w.paused)
	}
	if diff := cmp.Diff(routes.Split{StableVersion: "v1", CanaryVersion: "v1"}, w.split); diff != "" {
		t.Errorf("split after abort (-want,+got):\n%s", diff)
	}
}
