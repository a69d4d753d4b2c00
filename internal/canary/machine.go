// Package canary runs vane's releases: a pure step machine (Next) decides the
// next move from the stored status and what is observed, and the reconciler
// loads, acts on that move and persists the status.
package canary

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vane-io/vane/internal/api"
	"github.com/vane-io/vane/internal/routes"
)

// Observation is what the reconciler saw of a release's objects.
type Observation struct {
	// Replicas is the original Deployment's desired size.
	Replicas int32
	// StableAvailable counts available pods of the original Deployment. While
	// it is paused these are the stable version's pods.
	StableAvailable int32
	// Paused is the original Deployment's spec.paused.
	Paused bool
	// Rolled reports that the original Deployment has rolled out its current
	// template: every replica updated and available.
	Rolled bool
	// Canary is the canary Deployment, nil when there is none.
	Canary *CanaryObservation
	// Split is the traffic split the mesh expresses now.
	Split routes.Split
}

// CanaryObservation is what the reconciler saw of the canary Deployment.
type CanaryObservation struct {
	// Replicas is its desired size.
	Replicas int32
	// Ready reports that it runs the original's current template and every
	// one of its Replicas is updated and available.
	Ready bool
}

// Action is the one move the reconciler makes next. Zero value: nothing to do.
type Action struct {
	// CanaryReplicas, when set, is the size of the canary Deployment to
	// ensure, creating it or syncing its template to the original's.
	CanaryReplicas *int32
	// DeleteCanary removes the canary Deployment.
	DeleteCanary bool
	// Split, when set, is the traffic split to write.
	Split *routes.Split
	// Unpause lets the original Deployment roll out natively.
	Unpause bool
	// Done means the release ended; the finalizer can go.
	Done bool
	// RequeueAfter asks to be called again after this long, when nothing
	// watched will change before then (timed pauses).
	RequeueAfter time.Duration
	// Events tell the story on the Deployment once the status is persisted.
	Events []Event
}

// Event is a Kubernetes Event to record on the original Deployment.
type Event struct {
	Reason  string
	Message string
}

// Event reasons. TrafficShifted is recorded by the reconciler whenever it
// writes a split.
const (
	ReasonStepAdvanced     = "StepAdvanced"
	ReasonTrafficShifted   = "TrafficShifted"
	ReasonPromoting        = "Promoting"
	ReasonRolloutCompleted = "RolloutCompleted"
	ReasonRolledBack       = "RolloutRolledBack"
	ReasonDegraded         = "RolloutDegraded"
)

// Next decides the next move of a release. It is a pure function of the
// stored status, the plan, what was observed and the time; it returns the
// status to persist once the action has been carried out.
func Next(st api.Status, plan *api.Plan, obs Observation, now time.Time) (api.Status, Action) {
	st.StepCount = int32(len(plan.Steps))
	st.Message = ""
	if st.Phase == api.PhaseRollingBack {
		return rollBack(st, obs)
	}
	if st.Phase == api.PhaseDegraded {
		st.Phase = api.PhaseProgressing
	}
	if st.CurrentStepIndex < st.StepCount || obs.Split.StableVersion != st.CanaryVersion {
		if next, act, wait := prepareSubsets(st, obs); wait {
			return next, act
		}
	}
	if st.CurrentStepIndex < st.StepCount {
		step := plan.Steps[st.CurrentStepIndex]
		st.Phase = api.PhaseProgressing
		if step.SetWeight != nil {
			return setWeight(st, *step.SetWeight, obs, now)
		}
		return pause(st, step.Pause, now)
	}
	return promote(st, obs, now)
}

// prepareSubsets points the stable subset at the stable version and the
// canary subset at the canary version before any step runs. It reports
// wait=true when it returned a move to make first.
func prepareSubsets(st api.Status, obs Observation) (api.Status, Action, bool) {
	cur := obs.Split
	if cur.StableVersion == st.StableVersion && cur.CanaryVersion == st.CanaryVersion {
		return st, Action{}, false
	}
	// Guard: a subset is relabeled only while it carries no traffic, so pods
	// of a version about to be dropped never keep receiving requests they
	// would fail. The canary is drained to 0 first.
	if cur.CanaryVersion != st.CanaryVersion && cur.CanaryWeight > 0 {
		st.Message = fmt.Sprintf("draining canary %s before it changes to %s", cur.CanaryVersion, st.CanaryVersion)
		drained := cur
		drained.CanaryWeight = 0
		st.CanaryWeight = 0
		return st, Action{Split: &drained}, true
	}
	// Guard: the stable subset may be narrowed to the stable version while it
	// carries traffic only if that version has available pods behind it.
	if cur.StableVersion != st.StableVersion && cur.CanaryWeight < 100 && obs.StableAvailable == 0 {
		st.Message = fmt.Sprintf("waiting for available pods of stable version %s", st.StableVersion)
		return st, Action{}, true
	}
	want := routes.Split{StableVersion: st.StableVersion, CanaryVersion: st.CanaryVersion, CanaryWeight: cur.CanaryWeight}
	if cur.CanaryVersion != st.CanaryVersion {
		want.CanaryWeight = 0
	}
	st.Message = fmt.Sprintf("subsets: stable %s, canary %s", st.StableVersion, st.CanaryVersion)
	return st, Action{Split: &want}, true
}

// setWeight runs a setWeight step: size the canary for the weight, wait for
// its pods, then write the weight.
func setWeight(st api.Status, weight int32, obs Observation, now time.Time) (api.Status, Action) {
	cur := obs.Split
	// Traffic goes down before pods do: a shrinking canary never carries
	// more than its new share.
	if cur.CanaryWeight > weight {
		return shift(st, cur, weight, Action{})
	}
	replicas := CanaryReplicas(weight, obs.Replicas)
	if act, waiting := ensureCanary(&st, replicas, obs); waiting {
		return st, act
	}
	act := Action{}
	if cur.CanaryWeight != weight {
		st, act = shift(st, cur, weight, act)
	}
	return advance(st, now, act, fmt.Sprintf("setWeight %d", weight))
}

// ensureCanary asks for a canary of the given size and reports waiting=true
// until it is ready.
func ensureCanary(st *api.Status, replicas int32, obs Observation) (Action, bool) {
	if obs.Canary == nil || obs.Canary.Replicas != replicas {
		st.Message = fmt.Sprintf("scaling canary %s to %d replicas", st.CanaryVersion, replicas)
		return Action{CanaryReplicas: &replicas}, true
	}
	// Guard: traffic moves to the canary only once all its pods are
	// available, so a weight never points at a subset with no ready pods.
	if !obs.Canary.Ready {
		st.Message = fmt.Sprintf("waiting for %d canary pods of %s to be available", replicas, st.CanaryVersion)
		return Action{CanaryReplicas: &replicas}, true
	}
	return Action{}, false
}

// shift writes a new canary weight on top of act.
func shift(st api.Status, cur routes.Split, weight int32, act Action) (api.Status, Action) {
	want := cur
	want.CanaryWeight = weight
	act.Split = &want
	st.CanaryWeight = weight
	st.Message = fmt.Sprintf("canary weight %d%%", weight)
	return st, act
}

// pause runs a pause step: timed pauses end on their own, `pause: {}` waits
// for a person.
func pause(st api.Status, p *api.Pause, now time.Time) (api.Status, Action) {
	if st.StepStartedAt == nil {
		st.StepStartedAt = &metav1.MicroTime{Time: now}
	}
	if p.Duration == nil {
		st.Phase = api.PhasePaused
		st.Message = fmt.Sprintf("paused at canary weight %d%% until promoted", st.CanaryWeight)
		return st, Action{}
	}
	end := st.StepStartedAt.Add(*p.Duration)
	if left := end.Sub(now); left > 0 {
		st.Message = fmt.Sprintf("paused for %s, until %s", p.Duration, end.UTC().Format(time.RFC3339))
		return st, Action{RequeueAfter: left}
	}
	return advance(st, now, Action{}, fmt.Sprintf("pause %s", p.Duration))
}

// advance moves to the next step, which starts now.
func advance(st api.Status, now time.Time, act Action, done string) (api.Status, Action) {
	st.CurrentStepIndex++
	st.StepStartedAt = &metav1.MicroTime{Time: now}
	st.Message = fmt.Sprintf("step %d/%d done: %s", st.CurrentStepIndex, st.StepCount, done)
	act.Events = append(act.Events, Event{ReasonStepAdvanced, st.Message})
	return st, act
}

// promote ends a release whose steps are done: all traffic to the canary,
// roll the original out natively, move the stable subset to the new version,
// all traffic back to stable, remove the canary.
func promote(st api.Status, obs Observation, now time.Time) (api.Status, Action) {
	st.Phase = api.PhasePromoting
	cur := obs.Split
	if cur.StableVersion != st.CanaryVersion {
		if cur.CanaryWeight < 100 {
			if act, waiting := ensureCanary(&st, max(obs.Replicas, 1), obs); waiting {
				return st, act
			}
			return shift(st, cur, 100, Action{})
		}
		if obs.Paused {
			st.Message = fmt.Sprintf("rolling out %s natively", st.CanaryVersion)
			return st, Action{Unpause: true, Events: []Event{{ReasonPromoting, st.Message}}}
		}
		if !obs.Rolled {
			st.Message = fmt.Sprintf("waiting for the Deployment to be available on %s", st.CanaryVersion)
			return st, Action{}
		}
		// Guard: stable carries no traffic here (canary has 100%), so its
		// subset may move to the new version.
		st.Message = "stable subset moved to " + st.CanaryVersion
		return st, Action{Split: &routes.Split{StableVersion: st.CanaryVersion, CanaryVersion: st.CanaryVersion, CanaryWeight: 100}}
	}
	// The stable subset has moved: stable is the new version from here on.
	st.StableVersion = st.CanaryVersion
	// Guard: all traffic returns to stable only once the original is
	// available on the new version behind the moved stable subset.
	if !obs.Rolled {
		st.Message = fmt.Sprintf("waiting for the Deployment to be available on %s", st.CanaryVersion)
		return st, Action{}
	}
	if cur.CanaryWeight > 0 {
		return shift(st, cur, 0, Action{})
	}
	return finish(st, st.CanaryVersion, obs, now, Event{ReasonRolloutCompleted, fmt.Sprintf("release of %s complete: all traffic on stable", st.CanaryVersion)})
}

// rollBack ends a release whose version was edited back to stable: traffic
// to stable first, then the canary goes and the original resumes on its
// (stable) template.
func rollBack(st api.Status, obs Observation) (api.Status, Action) {
	cur := obs.Split
	if cur.CanaryWeight > 0 {
		st.Message = "rolling back: all traffic to stable " + st.StableVersion
		return shift(st, cur, 0, Action{})
	}
	return finish(st, st.StableVersion, obs, time.Time{}, Event{ReasonRolledBack, fmt.Sprintf("rolled back to %s: all traffic on stable", st.StableVersion)})
}

// finish removes the canary and leaves both subsets on the stable version.
// It is reached only with canary weight 0.
func finish(st api.Status, stable string, obs Observation, now time.Time, done Event) (api.Status, Action) {
	act := Action{}
	if obs.Canary != nil {
		act.DeleteCanary = true
	}
	if obs.Paused {
		act.Unpause = true
	}
	if obs.Split.StableVersion != stable || obs.Split.CanaryVersion != stable {
		// Safe: the canary subset carries no traffic.
		act.Split = &routes.Split{StableVersion: stable, CanaryVersion: stable, CanaryWeight: 0}
	}
	act.Done = true
	act.Events = []Event{done}
	next := api.Status{
		Phase:            api.PhaseHealthy,
		StableVersion:    stable,
		CurrentStepIndex: st.StepCount,
		StepCount:        st.StepCount,
		StepStartedAt:    st.StepStartedAt,
		Message:          done.Message,
	}
	if !now.IsZero() {
		next.StepStartedAt = &metav1.MicroTime{Time: now}
	}
	return next, act
}

// CanaryReplicas sizes the canary for a weight: ceil(weight% × replicas),
// at least 1 so a canary always has a pod to serve its share.
func CanaryReplicas(weight, replicas int32) int32 {
	n := (weight*replicas + 99) / 100
	return max(n, 1)
}
