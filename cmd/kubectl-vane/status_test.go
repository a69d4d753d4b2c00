package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vane-io/vane/internal/api"
)

func TestRender(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	ten := 10 * time.Second
	plan := &api.Plan{Steps: []api.Step{{Pause: &api.Pause{Duration: &ten}}, {Pause: &api.Pause{}}}}
	routes := []string{"route test-v1: subset stable 95%, subset canary 5%"}
	cases := map[string]struct {
		v    view
		want string
	}{
		"timed pause shows the time left": {
			v: view{name: "p", plan: plan, routes: routes, ready: map[string]int{"v1": 2, "v2": 1},
				status: &api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: 2, CanaryWeight: 5, StepStartedAt: &metav1.MicroTime{Time: t0.Add(-3 * time.Second)}, Message: "paused"}},
			want: "p  Progressing  step 0/2  (pause: 7s left of 10s)\n  stable  v1       2 ready\n  canary  v2       1 ready, weight 5%\n  route test-v1: subset stable 95%, subset canary 5%\n  paused\n",
		},
		"indefinite pause says how to go on": {
			v: view{name: "p", plan: plan, ready: map[string]int{"v1": 2},
				status: &api.Status{Phase: api.PhasePaused, StableVersion: "v1", CanaryVersion: "v2", CurrentStepIndex: 1, StepCount: 2}},
			want: "p  Paused  step 1/2  (waiting for: kubectl vane promote p)\n  stable  v1       2 ready\n  canary  v2       0 ready, weight 0%\n",
		},
		"healthy shows stable only": {
			v:    view{name: "p", plan: plan, ready: map[string]int{"v2": 2}, status: &api.Status{Phase: api.PhaseHealthy, StableVersion: "v2", CurrentStepIndex: 2, StepCount: 2}},
			want: "p  Healthy  step 2/2\n  stable  v2       2 ready\n",
		},
		"a release across clusters shows each cluster's part": {
			v: view{name: "p", plan: plan, ready: map[string]int{"v1": 2, "v2": 1},
				status: &api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: 2, Message: "waiting for cluster b: its Deployment runs version v1, not v2 yet",
					Members: []api.MemberStatus{{Cluster: "a", Version: "v2", Canary: "1/1"}, {Cluster: "b", Version: "v1", Waiting: "its Deployment runs version v1, not v2 yet"}}}},
			want: "p  Progressing  step 0/2\n  stable  v1       2 ready\n  canary  v2       1 ready, weight 0%\n" +
				"  cluster a          v2       canary 1/1 ready\n  cluster b          v1  waiting: its Deployment runs version v1, not v2 yet\n" +
				"  waiting for cluster b: its Deployment runs version v1, not v2 yet\n",
		},
		"no release": {v: view{name: "p", plan: plan}, want: "p: no release yet (vane starts one when the pod template's version label changes)\n"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.v.render(t0)); diff != "" {
				t.Errorf("(-want,+got):\n%s", diff)
			}
		})
	}
}
