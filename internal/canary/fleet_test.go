package canary

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vane-io/vane/internal/api"
	"github.com/vane-io/vane/internal/routes"
)

func TestNextFleet(t *testing.T) {
	start := api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: 4, StepStartedAt: &metav1.MicroTime{Time: t0}}
	pools := routes.Split{StableVersion: "v1", CanaryVersion: "v2"}
	member := func(name, version string, replicas int32, canary *CanaryObservation) MemberObservation {
		return MemberObservation{Cluster: name, Version: version, Observation: Observation{
			Replicas: replicas, StableAvailable: replicas, Paused: version == "v2", Canary: canary, Split: pools,
		}}
	}
	ready := func(n int32) *CanaryObservation { return &CanaryObservation{Replicas: n, Ready: true} }
	cases := map[string]struct {
		st          api.Status
		obs         []MemberObservation
		action      api.Action
		wantStep    int32
		wantWeight  *int32 // the split written, nil when none
		wantCanary  []*int32
		wantWaiting []string // substring of each member's Waiting
		wantMessage string
	}{
		"one cluster is Next": {
			st:         start,
			obs:        []MemberObservation{member("a", "v2", 4, ready(1))},
			wantStep:   1,
			wantWeight: ptr[int32](5),
			wantCanary: []*int32{nil},
		},
		"each cluster sizes its own canary from its own replicas": {
			st:          start,
			obs:         []MemberObservation{member("a", "v2", 4, nil), member("b", "v2", 40, nil)},
			wantCanary:  []*int32{ptr[int32](1), ptr[int32](2)},
			wantWaiting: []string{"", ""},
		},
		"no weight until the canaries of all clusters are ready": {
			st:          start,
			obs:         []MemberObservation{member("a", "v2", 4, ready(1)), member("b", "v2", 40, &CanaryObservation{Replicas: 2})},
			wantCanary:  []*int32{nil, ptr[int32](2)},
			wantWaiting: []string{"", "waiting for 2 canary pods"},
			wantMessage: "waiting for cluster b: waiting for 2 canary pods",
		},
		"all ready: one weight for all": {
			st:         start,
			obs:        []MemberObservation{member("a", "v2", 4, ready(1)), member("b", "v2", 40, ready(2))},
			wantStep:   1,
			wantWeight: ptr[int32](5),
			wantCanary: []*int32{nil, nil},
		},
		"a cluster not yet synced to the new version holds the release, naming itself": {
			st:          start,
			obs:         []MemberObservation{member("a", "v2", 4, ready(1)), member("b", "v1", 4, nil)},
			wantCanary:  []*int32{nil, nil},
			wantWaiting: []string{"", "runs version v1, not v2 yet"},
			wantMessage: "waiting for cluster b: its Deployment runs version v1, not v2 yet",
		},
		"the pools are pointed while a cluster is not synced yet": {
			st:          start,
			obs:         []MemberObservation{unpooled(member("a", "v2", 4, nil)), unpooled(member("b", "v1", 4, nil))},
			wantWeight:  ptr[int32](0),
			wantCanary:  []*int32{nil, nil},
			wantWaiting: []string{"", "runs version v1, not v2 yet"},
			wantMessage: "waiting for cluster b",
		},
		"a synced cluster's canary is created while another is not synced yet": {
			st:          start,
			obs:         []MemberObservation{member("a", "v2", 4, nil), member("b", "v1", 4, nil)},
			wantCanary:  []*int32{ptr[int32](1), nil},
			wantWaiting: []string{"", "runs version v1, not v2 yet"},
			wantMessage: "waiting for cluster b",
		},
		"an abort never waits for a cluster that is not synced": {
			st:         func() api.Status { s := start; s.CurrentStepIndex, s.CanaryWeight = 2, 50; return s }(),
			obs:        []MemberObservation{withWeight50(member("a", "v2", 4, ready(2))), withWeight50(member("b", "v1", 4, nil))},
			action:     api.ActionAbort,
			wantStep:   2,
			wantWeight: ptr[int32](0),
			wantCanary: []*int32{nil, nil},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for i := range tc.obs {
				tc.obs[i].Action = tc.action
			}
			next, act, moves := NextFleet(tc.st, seedPlan, tc.obs, t0.Add(time.Second))
			if next.CurrentStepIndex != tc.wantStep {
				t.Errorf("step = %d, want %d (%s)", next.CurrentStepIndex, tc.wantStep, next.Message)
			}
			switch {
			case tc.wantWeight == nil && act.Split != nil:
				t.Errorf("split written: %+v, want none", *act.Split)
			case tc.wantWeight != nil && (act.Split == nil || act.Split.CanaryWeight != *tc.wantWeight):
				t.Errorf("split = %+v, want weight %d", act.Split, *tc.wantWeight)
			}
			if act.CanaryReplicas != nil || act.DeleteCanary || act.Unpause {
				t.Errorf("shared action carries a cluster's move: %+v", act)
			}
			for i, m := range moves {
				if got, want := m.CanaryReplicas, tc.wantCanary[i]; (got == nil) != (want == nil) || (got != nil && *got != *want) {
					t.Errorf("cluster %s canary = %v, want %v", tc.obs[i].Cluster, deref(got), deref(want))
				}
				if tc.wantWaiting != nil && !strings.Contains(m.Waiting, tc.wantWaiting[i]) || (tc.wantWaiting != nil && tc.wantWaiting[i] == "" && m.Waiting != "") {
					t.Errorf("cluster %s waiting = %q, want %q", tc.obs[i].Cluster, m.Waiting, tc.wantWaiting[i])
				}
			}
			if tc.wantMessage != "" && !strings.Contains(next.Message, tc.wantMessage) {
				t.Errorf("message = %q, want it to contain %q", next.Message, tc.wantMessage)
			}
		})
	}
}

func unpooled(o MemberObservation) MemberObservation {
	o.Split = routes.Split{}
	return o
}

func withWeight50(o MemberObservation) MemberObservation {
	o.Split.CanaryWeight = 50
	return o
}

func deref(p *int32) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestNextFleetPromotion walks two clusters through promotion: neither is
// unpaused before both canaries carry all the traffic, and the stable pool
// moves only once both have rolled out.
func TestNextFleetPromotion(t *testing.T) {
	st := api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: 4, CurrentStepIndex: 4, CanaryWeight: 50, StepStartedAt: &metav1.MicroTime{Time: t0}}
	split := routes.Split{StableVersion: "v1", CanaryVersion: "v2", CanaryWeight: 50}
	obs := []MemberObservation{
		{Cluster: "a", Version: "v2", Observation: Observation{Replicas: 2, StableAvailable: 2, Paused: true, Canary: &CanaryObservation{Replicas: 1, Ready: true}, Split: split}},
		{Cluster: "b", Version: "v2", Observation: Observation{Replicas: 4, StableAvailable: 4, Paused: true, Canary: &CanaryObservation{Replicas: 2, Ready: true}, Split: split}},
	}
	now := t0.Add(time.Minute)
	// Both canaries grow to full size first; no traffic moves meanwhile.
	next, act, moves := NextFleet(st, seedPlan, obs, now)
	if act.Split != nil || *moves[0].CanaryReplicas != 2 || *moves[1].CanaryReplicas != 4 || moves[0].Unpause || moves[1].Unpause {
		t.Fatalf("first promotion move = %+v %+v %+v", act, moves[0], moves[1])
	}
	// a is full, b not yet: still no traffic move.
	obs[0].Canary = &CanaryObservation{Replicas: 2, Ready: true}
	obs[1].Canary = &CanaryObservation{Replicas: 4}
	if _, act, _ = NextFleet(next, seedPlan, obs, now); act.Split != nil {
		t.Fatalf("weight moved while cluster b's canary is not ready: %+v", *act.Split)
	}
	obs[1].Canary.Ready = true
	next, act, _ = NextFleet(next, seedPlan, obs, now)
	if act.Split == nil || act.Split.CanaryWeight != 100 {
		t.Fatalf("want 100%% to the canaries, got %+v", act)
	}
	// Widen, then unpause both.
	for i := range obs {
		obs[i].Split.CanaryWeight = 100
	}
	next, act, _ = NextFleet(next, seedPlan, obs, now)
	if act.Split == nil || act.Split.StableVersion != "" {
		t.Fatalf("want the stable pool widened, got %+v", act)
	}
	for i := range obs {
		obs[i].Split.StableVersion = ""
	}
	next, _, moves = NextFleet(next, seedPlan, obs, now)
	if !moves[0].Unpause || !moves[1].Unpause {
		t.Fatalf("want both clusters unpaused, got %+v %+v", moves[0], moves[1])
	}
	// a rolled out, b not yet: the stable pool does not move.
	obs[0].Paused, obs[1].Paused, obs[0].Rolled = false, false, true
	if _, act, _ = NextFleet(next, seedPlan, obs, now); act.Split != nil {
		t.Fatalf("stable pool moved before cluster b rolled out: %+v", *act.Split)
	}
	obs[1].Rolled = true
	if _, act, _ = NextFleet(next, seedPlan, obs, now); act.Split == nil || act.Split.StableVersion != "v2" {
		t.Fatalf("want the stable pool on v2 once both rolled out, got %+v", act)
	}
}

// TestNextFleetRollback: a version edited back in one cluster drains the
// canary's traffic at once, but the release ends (unpausing, the canary
// removed) only once every cluster runs the stable version again.
func TestNextFleetRollback(t *testing.T) {
	st := api.Status{Phase: api.PhaseRollingBack, StableVersion: "v1", CanaryVersion: "v2", StepCount: 4, CurrentStepIndex: 2, CanaryWeight: 50, StepStartedAt: &metav1.MicroTime{Time: t0}}
	split := routes.Split{StableVersion: "v1", CanaryVersion: "v2", CanaryWeight: 50}
	obs := []MemberObservation{
		{Cluster: "a", Version: "v1", Observation: Observation{Replicas: 2, StableAvailable: 2, Paused: true, Canary: &CanaryObservation{Replicas: 1, Ready: true}, Split: split}},
		{Cluster: "b", Version: "v2", Observation: Observation{Replicas: 2, StableAvailable: 2, Paused: true, Canary: &CanaryObservation{Replicas: 1, Ready: true}, Split: split}},
	}
	next, act, _ := NextFleet(st, seedPlan, obs, t0)
	if act.Split == nil || act.Split.CanaryWeight != 0 || next.Phase != api.PhaseRollingBack {
		t.Fatalf("want the canary drained while b is behind, got %+v %+v", next, act)
	}
	for i := range obs {
		obs[i].Split.CanaryWeight = 0
	}
	next, act, moves := NextFleet(next, seedPlan, obs, t0)
	if act.Done || moves[1].Unpause || moves[1].DeleteCanary || next.Phase != api.PhaseRollingBack || !strings.Contains(next.Message, "cluster b") {
		t.Fatalf("the release ended while b still runs v2: %+v %+v %+v", next, act, moves[1])
	}
	obs[1].Version = "v1"
	next, act, moves = NextFleet(next, seedPlan, obs, t0)
	if !act.Done || !moves[0].Unpause || !moves[1].Unpause || !moves[1].DeleteCanary || next.Phase != api.PhaseHealthy {
		t.Fatalf("want the release ended in both clusters, got %+v %+v %+v", next, act, moves)
	}
}

// TestSideBySide: the Deployment is the canary; vane moves weights only,
// never sizes it, relabels a subset or deletes it, and scales the old
// version down only when asked.
func TestSideBySide(t *testing.T) {
	d := 30 * time.Second
	plan := &api.Plan{Istio: istio, Steps: []api.Step{weight(20), pauseForever(), weight(50), pauseFor(time.Second), weight(100)}}
	st := api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: 5, SideBySide: true, StepStartedAt: &metav1.MicroTime{Time: t0}}
	split := routes.Split{StableVersion: "v1", CanaryVersion: "v2", CanaryWeight: 20} // the seed's 80/20
	obs := Observation{Replicas: 1, Split: split}

	next, act := Next(st, plan, obs, t0)
	if next.CurrentStepIndex != 0 || act.CanaryReplicas != nil || act.Split != nil || !strings.Contains(next.Message, "pods of v2") {
		t.Fatalf("not available: want a wait, got %+v %+v", next, act)
	}
	obs.Rolled = true
	next, act = Next(st, plan, obs, t0)
	if next.CurrentStepIndex != 1 || act.Split != nil {
		t.Fatalf("20%% already written: want the step done with no write, got %+v %+v", next, act)
	}
	next, act = Next(next, plan, obs, t0)
	if next.Phase != api.PhasePaused || act.CanaryReplicas != nil {
		t.Fatalf("pause: got %+v %+v", next, act)
	}

	// Abort: weight to 0, the subsets and the Deployment stay.
	obs.Action = api.ActionAbort
	ab, act := Next(next, plan, obs, t0)
	if act.Split == nil || act.Split.CanaryWeight != 0 || act.Split.CanaryVersion != "v2" || act.DeleteCanary {
		t.Fatalf("abort: got %+v", act)
	}
	obs.Action, obs.Split.CanaryWeight = "", 0
	if _, act = Next(ab, plan, obs, t0); act.Split != nil || act.DeleteCanary {
		t.Fatalf("aborted side-by-side release relabels or deletes: %+v", act)
	}

	// Promotion with scaleDownDelaySeconds: 100%, then the delay, then the
	// old version scaled down; Healthy on v2 with the subsets untouched.
	done := api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: 5, CurrentStepIndex: 5, CanaryWeight: 100, SideBySide: true, StepStartedAt: &metav1.MicroTime{Time: t0}}
	obs.Split.CanaryWeight = 100
	plan.ScaleDownDelay = &d
	next, act = Next(done, plan, obs, t0.Add(10*time.Second))
	if act.ScaleDown != "" || act.RequeueAfter != 20*time.Second || next.Phase != api.PhasePromoting {
		t.Fatalf("before the delay: got %+v %+v", next, act)
	}
	next, act = Next(done, plan, obs, t0.Add(d))
	if act.ScaleDown != "v1" || !act.Done || act.Split != nil || act.Unpause || next.Phase != api.PhaseHealthy || next.StableVersion != "v2" || next.SideBySide {
		t.Fatalf("after the delay: got %+v %+v", next, act)
	}
	plan.ScaleDownDelay = nil
	if _, act = Next(done, plan, obs, t0); act.ScaleDown != "" || !act.Done {
		t.Fatalf("without scaleDownDelaySeconds the old version stays: %+v", act)
	}
}
