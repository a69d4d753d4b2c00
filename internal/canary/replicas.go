package canary

import (
	"fmt"
	"time"

	"github.com/vane-io/vane/internal/api"
)

// A release without trafficRouting (Argo Rollouts' basic canary) has no mesh
// to write weights to: the Deployment's Service selects the stable and the
// canary pods alike and spreads requests over them, so the canary's share of
// the traffic is its share of the pods. Every step that sizes the canary
// therefore sets its weight, and the weight is approximate: it can only be a
// ratio n/(n+R) of whole pods, R being the original's replicas, which belong
// to git and are never changed. The status reports the effective weight.

// runStepByReplicas runs the current step of a release without a mesh:
// setWeight sizes the canary to the ratio closest to the weight,
// setCanaryScale sizes it directly; a pause keeps the size, following a
// scale of the original.
func runStepByReplicas(st api.Status, plan *api.Plan, obs Observation, now time.Time) (api.Status, Action) {
	i := st.CurrentStepIndex
	step := plan.Steps[i]
	if step.Pause != nil {
		n := PodsAt(plan, i, obs.Replicas)
		st.CanaryWeight = EffectiveWeight(n, obs.Replicas)
		return pause(st, step.Pause, n, obs, now)
	}
	n := PodsAt(plan, i+1, obs.Replicas)
	// Shrinking needs no traffic moved first: a terminating pod leaves the
	// Service's endpoints, so traffic follows the pods both ways.
	if act, waiting := ensureCanary(&st, n, obs); waiting {
		return st, act
	}
	st.CanaryWeight = EffectiveWeight(n, obs.Replicas)
	done := fmt.Sprintf("canary scaled to %d replicas", n)
	if step.SetWeight != nil {
		done = fmt.Sprintf("setWeight %d", *step.SetWeight)
	}
	return advance(st, now, Action{}, fmt.Sprintf("%s: %s beside %d stable, %d%% of the traffic", done, pods(n, "canary pod"), obs.Replicas, st.CanaryWeight))
}

// pods says "1 canary pod", "2 canary pods".
func pods(n int32, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// promoteByReplicas ends a release without a mesh: the original rolls out
// the new version natively while the canary pods keep serving beside it,
// then the canary goes.
func promoteByReplicas(st api.Status, obs Observation, now time.Time) (api.Status, Action) {
	st.Phase = api.PhasePromoting
	if obs.Paused {
		st.Message = fmt.Sprintf("rolling out %s natively", st.CanaryVersion)
		return st, Action{Unpause: true, Events: []Event{{ReasonPromoting, st.Message}}}
	}
	// Guard: the canary's pods are removed only once the original serves the
	// new version with all its replicas, so the Service never has fewer
	// ready pods than the Deployment asks for.
	if !obs.Rolled {
		st.Message = fmt.Sprintf("waiting for the Deployment to be available on %s", st.CanaryVersion)
		return st, Action{}
	}
	st.StableVersion = st.CanaryVersion
	return finish(st, st.CanaryVersion, false, obs, now, Event{ReasonRolloutCompleted, fmt.Sprintf("release of %s complete: all traffic on stable", st.CanaryVersion)})
}

// PodsAt sizes the canary of a release without a mesh before step i: the
// last setWeight or setCanaryScale wins (both size the canary, as the pods
// are the split), matchTrafficWeight returns to the last weight. Zero
// before any of them.
func PodsAt(plan *api.Plan, i int32, replicas int32) int32 {
	n, weight := int32(0), int32(0)
	for _, s := range plan.Steps[:min(int(i), len(plan.Steps))] {
		switch {
		case s.SetWeight != nil:
			weight = *s.SetWeight
			n = RatioReplicas(weight, replicas)
		case s.SetCanaryScale != nil && s.SetCanaryScale.MatchTrafficWeight:
			n = RatioReplicas(weight, replicas)
		case s.SetCanaryScale != nil:
			n = scaledReplicas(s.SetCanaryScale, replicas)
		}
	}
	return n
}

// RatioReplicas sizes a canary that runs beside replicas stable pods with no
// mesh: the number of canary pods n whose share n/(n+replicas) is closest
// to weight%. Ties go to fewer pods. A weight above 0 gets at least one pod
// (a canary without a pod tests nothing); the canary never outgrows the
// Deployment (n ≤ replicas), so its share tops out at 50%.
func RatioReplicas(weight, replicas int32) int32 {
	switch {
	case weight <= 0:
		return 0
	case replicas <= 0:
		return 1
	case weight >= 50:
		return replicas
	}
	w, r := int64(weight), int64(replicas)
	// The exact solution of n/(n+r) = w/100 is n = w·r/(100-w); the share
	// grows with n, so the closest whole n is its floor or its ceiling.
	lo := max(min(w*r/(100-w), r), 1)
	hi := min(lo+1, r)
	// |n/(n+r) - w/100| compared without division: |100n - w(n+r)| / (n+r).
	dist := func(n int64) int64 { return abs(100*n - w*(n+r)) }
	if dist(hi)*(lo+r) < dist(lo)*(hi+r) {
		return int32(hi)
	}
	return int32(lo)
}

// EffectiveWeight is the canary's share of the traffic, in percent rounded
// to the nearest, when canary pods run beside replicas stable pods behind
// one Service.
func EffectiveWeight(canary, replicas int32) int32 {
	total := int64(canary) + int64(replicas)
	if canary <= 0 || total <= 0 {
		return 0
	}
	return int32((200*int64(canary) + total) / (2 * total))
}

// scaledReplicas is the size a setCanaryScale asks for: a number of pods,
// or a percentage of the Deployment's replicas rounded up.
func scaledReplicas(scale *api.CanaryScale, replicas int32) int32 {
	if scale.Replicas != nil {
		return *scale.Replicas
	}
	return (*scale.Weight*replicas + 99) / 100
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
