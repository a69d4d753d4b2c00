package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/api"
)

func leaseHolder(t *testing.T, a *app) string {
	t.Helper()
	l := &coordinationv1.Lease{}
	if err := a.c.Client.Get(context.Background(), types.NamespacedName{Namespace: "vane-system", Name: "vane.io"}, l); err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// Two replicas with leader election; the leader crashes (SIGKILL) during a
// timed pause; the other takes the lease and finishes the release with no
// step repeated or skipped, and no traffic to a pool without Ready pods.
func TestLeaderFailoverMidRelease(t *testing.T) {
	le := []string{"--leader-elect", "--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=500ms"}
	framework.Vane(t)
	framework.RestartVane(t, le...)
	t.Cleanup(func() { framework.RestartVane(t) })
	a := givenApp(t, 2, "- setWeight: 20\n- pause: {duration: 3s}\n- setWeight: 40\n- pause: {duration: 3s}\n- setWeight: 60\n")
	first := leaseHolder(t, a)
	if first == "" {
		t.Fatal("no leader after the first replica started")
	}
	framework.VaneReplica(t, 2, le...)
	t.Cleanup(func() { framework.KillVane(t, 2) })

	rec := a.record()
	a.whenVersionEdited("v2")
	framework.WaitFor(t, 30*time.Second, "the first pause", func(context.Context) (bool, error) {
		return a.status().CurrentStepIndex == 1, nil
	})
	framework.KillVane(t, 1)
	killed := time.Now()
	a.waitPhase(api.PhaseHealthy, 60*time.Second)
	a.waitAvailable("v2")
	if second := leaseHolder(t, a); second == "" || second == first {
		t.Errorf("lease holder %q after the crash, want the other replica (was %q)", second, first)
	}
	t.Logf("release finished %s after the leader was killed", time.Since(killed).Round(100*time.Millisecond))

	rec.history() // no traffic to a pool without Ready pods
	if diff := cmp.Diff([]int32{0, 20, 40, 60, 100, 0}, a.shiftedWeights()); diff != "" {
		t.Errorf("canary weights (-want,+got):\n%s", diff)
	}
	var steps []string
	for _, e := range a.events() {
		if strings.HasPrefix(e, "StepAdvanced: ") {
			steps = append(steps, e)
		}
	}
	want := []string{
		"StepAdvanced: step 1/5 done: setWeight 20",
		"StepAdvanced: step 2/5 done: pause 3s",
		"StepAdvanced: step 3/5 done: setWeight 40",
		"StepAdvanced: step 4/5 done: pause 3s",
		"StepAdvanced: step 5/5 done: setWeight 60",
	}
	if diff := cmp.Diff(want, steps); diff != "" {
		t.Errorf("steps (-want,+got), each exactly once and in order:\n%s", diff)
	}
}
