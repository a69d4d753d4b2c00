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
	// Split is the traffic split the mesh expresses now; zero for a release
	// without trafficRouting, where the split is the canary's size.
	Split routes.Split
	// Action is what a person asked for, "" when nothing.
	Action api.Action
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
	// ScaleDown, when set, is the old version whose Deployments (in every
	// cluster) are scaled to zero: the end of a side-by-side release with
	// scaleDownDelaySeconds.
	ScaleDown string
	// ClearAction removes the person's action annotation: it was acted on.
	ClearAction bool
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
// writes a split; ActionIgnored, RolloutDegraded and ReleaseCaughtUp (a
// version change the webhook did not hold) are warnings.
const (
	ReasonStepAdvanced     = "StepAdvanced"
	ReasonTrafficShifted   = "TrafficShifted"
	ReasonPromoting        = "Promoting"
	ReasonPromoted         = "Promoted"
	ReasonAborted          = "RolloutAborted"
	ReasonRetried          = "RolloutRetried"
	ReasonActionIgnored    = "ActionIgnored"
	ReasonRolloutCompleted = "RolloutCompleted"
	ReasonRolledBack       = "RolloutRolledBack"
	ReasonDegraded         = "RolloutDegraded"
	ReasonCaughtUp         = "ReleaseCaughtUp"
	ReasonOptedOut         = "RolloutOptedOut"
	ReasonScaledDown       = "OldVersionScaledDown"
	ReasonStarted          = "ReleaseStarted"
)

// Next decides the next move of a release. It is a pure function of the
// stored status, the plan, what was observed and the time; it returns the
// status to persist once the action has been carried out.
func Next(st api.Status, plan *api.Plan, obs Observation, now time.Time) (api.Status, Action) {
	st.StepCount = int32(len(plan.Steps))
	st.Message = ""
	if obs.Action != "" {
		return onAction(st, plan, obs, now)
	}
	switch st.Phase {
	case api.PhaseRollingBack:
		return rollBack(st, plan.Routed(), obs)
	case api.PhaseAborted:
		return aborted(st, plan.Routed(), obs)
	case api.PhaseDegraded:
		st.Phase = api.PhaseProgressing
	}
	// Without a mesh the pools are the two Deployments: they always select
	// their own versions, there is nothing to point.
	// During promotion the pools move on their own schedule (promote).
	if plan.Routed() && (st.CurrentStepIndex < st.StepCount || (obs.Split.StableVersion != st.CanaryVersion && obs.Split.CanaryWeight < 100)) {
		if next, act, wait := prepareSubsets(st, obs); wait {
			return next, act
		}
	}
	if st.CurrentStepIndex < st.StepCount {
		st.Phase = api.PhaseProgressing
		if !plan.Routed() {
			return runStepByReplicas(st, plan, obs, now)
		}
		return runStep(st, plan, obs, now)
	}
	if !plan.Routed() {
		return promoteByReplicas(st, obs, now)
	}
	if st.SideBySide {
		return promoteSideBySide(st, plan, obs, now)
	}
	return promote(st, obs, now)
}

// onAction carries out what a person asked for. The annotation is cleared
// whether the action applied or not; an action that does not apply is
// reported, never silently dropped.
func onAction(st api.Status, plan *api.Plan, obs Observation, now time.Time) (api.Status, Action) {
	stepping := st.CurrentStepIndex < st.StepCount && (st.Phase == api.PhaseProgressing || st.Phase == api.PhasePaused || st.Phase == api.PhaseDegraded)
	ignore := func(why string) (api.Status, Action) {
		return st, Action{ClearAction: true, Events: []Event{{ReasonActionIgnored, fmt.Sprintf("action %s ignored: %s", obs.Action, why)}}}
	}
	switch obs.Action {
	case api.ActionAbort:
		// Once the original rolls out the new version there is no canary to
		// abort: editing the version back rolls back instead.
		if st.Phase == api.PhaseRollingBack || st.Phase == api.PhaseAborted || (st.Phase == api.PhasePromoting && !obs.Paused) {
			return ignore(fmt.Sprintf("the release is %s; to go back, edit the version to %s", st.Phase, st.StableVersion))
		}
		st.Phase = api.PhaseAborted
		next, act := aborted(st, plan.Routed(), obs)
		act.ClearAction = true
		act.Events = append(act.Events, Event{ReasonAborted, fmt.Sprintf("aborted at step %d/%d: all traffic to stable %s, canary %s removed", st.CurrentStepIndex, st.StepCount, st.StableVersion, st.CanaryVersion)})
		return next, act
	case api.ActionRetry:
		if st.Phase != api.PhaseAborted {
			return ignore("only an aborted release can be retried")
		}
		st.Phase, st.CurrentStepIndex, st.CanaryWeight = api.PhaseProgressing, 0, 0
		st.StepStartedAt = &metav1.MicroTime{Time: now}
		st.Message = "retrying from step 0"
		return st, Action{ClearAction: true, Events: []Event{{ReasonRetried, fmt.Sprintf("release of %s retried from step 0", st.CanaryVersion)}}}
	case api.ActionPromoteFull:
		if !stepping {
			return ignore(fmt.Sprintf("the release is %s, not walking its steps", st.Phase))
		}
		skipped := fmt.Sprintf("promoted in full: steps %d to %d skipped", st.CurrentStepIndex+1, st.StepCount)
		st.CurrentStepIndex = st.StepCount
		st.StepStartedAt = &metav1.MicroTime{Time: now}
		st.Message = "remaining steps skipped"
		return st, Action{ClearAction: true, Events: []Event{{ReasonPromoted, skipped}}}
	default: // promote
		if !stepping || plan.Steps[st.CurrentStepIndex].Pause == nil {
			return ignore(fmt.Sprintf("the release is not paused (phase %s, step %d/%d)", st.Phase, st.CurrentStepIndex, st.StepCount))
		}
		st.Phase = api.PhaseProgressing
		next, act := advance(st, now, Action{ClearAction: true}, "promoted")
		act.Events = append(act.Events, Event{ReasonPromoted, fmt.Sprintf("pause at step %d/%d ended by a person", st.CurrentStepIndex+1, st.StepCount)})
		return next, act
	}
}

// aborted keeps an aborted release where a person put it: all traffic and
// header routes on stable first, then the canary pool back on the stable
// version, then the canary removed. This is seed 004's rollback: the
// subsets select only the old version, every request goes to it, no canary
// remains; the Deployment stays held on the new template until a retry
// (which starts the canary again) or an edit of the version.
func aborted(st api.Status, routed bool, obs Observation) (api.Status, Action) {
	st.Phase, st.CanaryWeight = api.PhaseAborted, 0
	st.Message = fmt.Sprintf("aborted: all traffic on stable %s, canary removed; set %s=retry to start again, or edit the version", st.StableVersion, api.AnnotationAction)
	if routed {
		want := obs.Split
		want.CanaryWeight, want.HeaderRoutes = 0, nil
		if !obs.Split.Equal(want) {
			return st, Action{Split: &want}
		}
		if st.SideBySide {
			// The Deployment is the canary and the subsets are the user's:
			// both stay as they are.
			st.Message = fmt.Sprintf("aborted: all traffic on stable %s; set %s=retry to start again", st.StableVersion, api.AnnotationAction)
			return st, Action{}
		}
		// Guard: the canary pool is relabeled only once it carries no
		// traffic, which the move above made sure of.
		if want.CanaryVersion != st.StableVersion {
			want.CanaryVersion = st.StableVersion
			return st, Action{Split: &want}
		}
	}
	if obs.Canary != nil {
		return st, Action{DeleteCanary: true}
	}
	return st, Action{}
}

// prepareSubsets points the stable pool at the stable version and the
// canary pool at the canary version before any step runs. It reports
// wait=true when it returned a move to make first.
func prepareSubsets(st api.Status, obs Observation) (api.Status, Action, bool) {
	cur := obs.Split
	if cur.StableVersion == st.StableVersion && cur.CanaryVersion == st.CanaryVersion {
		return st, Action{}, false
	}
	// Guard: a pool is relabeled only while it carries no traffic, so pods
	// of a version about to be dropped never keep receiving requests. The
	// canary (weight and header routes) is drained first.
	if cur.CanaryVersion != st.CanaryVersion && (cur.CanaryWeight > 0 || len(cur.HeaderRoutes) > 0) {
		st.Message = fmt.Sprintf("draining canary %s before it changes to %s", cur.CanaryVersion, st.CanaryVersion)
		drained := cur
		drained.CanaryWeight, drained.HeaderRoutes = 0, nil
		st.CanaryWeight = 0
		return st, Action{Split: &drained}, true
	}
	// Guard: the stable pool may be narrowed to the stable version while it
	// carries traffic only if that version has available pods behind it.
	if cur.StableVersion != st.StableVersion && cur.CanaryWeight < 100 && obs.StableAvailable == 0 {
		st.Message = fmt.Sprintf("waiting for available pods of stable version %s", st.StableVersion)
		return st, Action{}, true
	}
	want := cur
	want.StableVersion, want.CanaryVersion = st.StableVersion, st.CanaryVersion
	st.Message = fmt.Sprintf("pools: stable %s, canary %s", st.StableVersion, st.CanaryVersion)
	return st, Action{Split: &want}, true
}

// runStep runs the current step. Header routes and canary scale come from
// the steps before it.
func runStep(st api.Status, plan *api.Plan, obs Observation, now time.Time) (api.Status, Action) {
	i := st.CurrentStepIndex
	step := plan.Steps[i]
	headers := HeaderRoutesAt(plan, i)
	scale := CanaryScaleAt(plan, i)
	switch {
	case step.SetWeight != nil:
		w := *step.SetWeight
		return setWeight(st, w, desiredReplicas(scale, w, headers, obs.Replicas), headers, obs, now)
	case step.SetCanaryScale != nil:
		after := CanaryScaleAt(plan, i+1)
		replicas := desiredReplicas(after, st.CanaryWeight, headers, obs.Replicas)
		if act, waiting := ensureCanary(&st, replicas, obs); waiting {
			return st, act
		}
		return advance(st, now, Action{}, fmt.Sprintf("canary scaled to %d replicas", replicas))
	case step.SetHeaderRoute != nil:
		return setHeaderRoute(st, *step.SetHeaderRoute, desiredReplicas(scale, st.CanaryWeight, HeaderRoutesAt(plan, i+1), obs.Replicas), HeaderRoutesAt(plan, i+1), obs, now)
	default:
		return pause(st, step.Pause, desiredReplicas(scale, st.CanaryWeight, headers, obs.Replicas), obs, now)
	}
}

// setWeight runs a setWeight step: size the canary, wait for its pods, then
// write the weight.
func setWeight(st api.Status, weight, replicas int32, headers []api.HeaderRoute, obs Observation, now time.Time) (api.Status, Action) {
	cur := obs.Split
	cur.HeaderRoutes = headers
	// Traffic goes down before pods do: a shrinking canary never carries
	// more than its new share.
	if obs.Split.CanaryWeight > weight {
		return shift(st, cur, weight, Action{})
	}
	if act, waiting := ensureCanary(&st, replicas, obs); waiting {
		return st, act
	}
	act := Action{}
	if !obs.Split.Equal(withWeight(cur, weight)) {
		st, act = shift(st, cur, weight, act)
	}
	return advance(st, now, act, fmt.Sprintf("setWeight %d", weight))
}

// setHeaderRoute runs a setHeaderRoute step: a route that sends requests to
// the canary is written only once the canary's pods are available.
func setHeaderRoute(st api.Status, h api.HeaderRoute, replicas int32, headers []api.HeaderRoute, obs Observation, now time.Time) (api.Status, Action) {
	if len(h.Match) > 0 {
		if act, waiting := ensureCanary(&st, replicas, obs); waiting {
			return st, act
		}
	}
	act := Action{}
	want := obs.Split
	want.HeaderRoutes = headers
	if !obs.Split.Equal(want) {
		act.Split = &want
	}
	done := "setHeaderRoute " + h.Name
	if len(h.Match) == 0 {
		done += " (removed)"
	}
	return advance(st, now, act, done)
}

func withWeight(s routes.Split, w int32) routes.Split {
	s.CanaryWeight = w
	return s
}

// ensureCanary asks for a canary of the given size and reports waiting=true
// until it is ready.
func ensureCanary(st *api.Status, replicas int32, obs Observation) (Action, bool) {
	if st.SideBySide {
		// The Deployment is the canary, sized by its owner. Guard: traffic
		// moves to it only once it is available.
		if !obs.Rolled {
			st.Message = fmt.Sprintf("waiting for the Deployment's pods of %s to be available", st.CanaryVersion)
			return Action{}, true
		}
		return Action{}, false
	}
	if obs.Canary == nil || obs.Canary.Replicas != replicas {
		st.Message = fmt.Sprintf("scaling canary %s to %d replicas", st.CanaryVersion, replicas)
		return Action{CanaryReplicas: &replicas}, true
	}
	// Guard: traffic moves to the canary only once all its pods are
	// available, so a route never points at a pool with no ready pods.
	if !obs.Canary.Ready {
		st.Message = fmt.Sprintf("waiting for %d canary pods of %s to be available", replicas, st.CanaryVersion)
		return Action{CanaryReplicas: &replicas}, true
	}
	return Action{}, false
}

// shift writes a new canary weight on top of act (header routes as in cur).
func shift(st api.Status, cur routes.Split, weight int32, act Action) (api.Status, Action) {
	want := withWeight(cur, weight)
	act.Split = &want
	st.CanaryWeight = weight
	st.Message = fmt.Sprintf("canary weight %d%%", weight)
	return st, act
}

// pause runs a pause step: timed pauses end on their own, `pause: {}` waits
// for a person. Meanwhile the canary follows the Deployment's size and
// template (a scale or an image edit), without holding the pause.
func pause(st api.Status, p *api.Pause, replicas int32, obs Observation, now time.Time) (api.Status, Action) {
	if st.StepStartedAt == nil {
		st.StepStartedAt = &metav1.MicroTime{Time: now}
	}
	act := Action{}
	if !st.SideBySide && (obs.Canary == nil || obs.Canary.Replicas != replicas || !obs.Canary.Ready) {
		act.CanaryReplicas = &replicas
	}
	if p.Duration == nil {
		st.Phase = api.PhasePaused
		st.Message = fmt.Sprintf("paused at canary weight %d%% until promoted (%s=promote)", st.CanaryWeight, api.AnnotationAction)
		return st, act
	}
	end := st.StepStartedAt.Add(*p.Duration)
	if left := end.Sub(now); left > 0 {
		st.Message = fmt.Sprintf("paused for %s, until %s", p.Duration, end.UTC().Format(time.RFC3339))
		act.RequeueAfter = left
		return st, act
	}
	return advance(st, now, act, fmt.Sprintf("pause %s", p.Duration))
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
// roll the original out natively, move the stable pool to the new version,
// all traffic back to stable, remove the canary and the header routes.
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
		// Guard: the native rollout is about to replace the stable version's
		// pods. The stable pool is widened to every version first, so whatever
		// still reaches it (routes vane does not weigh, the stable Service
		// itself) always finds ready pods of one version or the other.
		if obs.Paused && cur.StableVersion != "" {
			st.Message = "stable pool widened to every version for the native rollout"
			widened := cur
			widened.StableVersion = ""
			return st, Action{Split: &widened}
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
		// pool may move to the new version.
		st.Message = "stable moved to " + st.CanaryVersion
		return st, Action{Split: &routes.Split{StableVersion: st.CanaryVersion, CanaryVersion: st.CanaryVersion, CanaryWeight: 100, HeaderRoutes: cur.HeaderRoutes}}
	}
	// The stable pool has moved: stable is the new version from here on.
	st.StableVersion = st.CanaryVersion
	// Guard: all traffic returns to stable only once the original is
	// available on the new version behind the moved stable pool.
	if !obs.Rolled {
		st.Message = fmt.Sprintf("waiting for the Deployment to be available on %s", st.CanaryVersion)
		return st, Action{}
	}
	if cur.CanaryWeight > 0 || len(cur.HeaderRoutes) > 0 {
		cur.HeaderRoutes = nil
		return shift(st, cur, 0, Action{})
	}
	return finish(st, st.CanaryVersion, true, obs, now, Event{ReasonRolloutCompleted, fmt.Sprintf("release of %s complete: all traffic on stable", st.CanaryVersion)})
}

// promoteSideBySide ends a side-by-side release: all traffic to the new
// version's subset, then, with scaleDownDelaySeconds, the old version's
// Deployments scaled to zero after that delay. The subsets stay as the user
// wrote them; the new version is the stable one from here on.
func promoteSideBySide(st api.Status, plan *api.Plan, obs Observation, now time.Time) (api.Status, Action) {
	st.Phase = api.PhasePromoting
	cur := obs.Split
	if cur.CanaryWeight < 100 || len(cur.HeaderRoutes) > 0 {
		if act, waiting := ensureCanary(&st, obs.Replicas, obs); waiting {
			return st, act
		}
		cur.HeaderRoutes = nil
		return shift(st, cur, 100, Action{})
	}
	old := st.StableVersion
	act := Action{}
	if d := plan.ScaleDownDelay; d != nil {
		if left := st.StepStartedAt.Add(*d).Sub(now); left > 0 {
			st.Message = fmt.Sprintf("all traffic on %s; scaling %s down in %s", st.CanaryVersion, old, left.Round(time.Second))
			return st, Action{RequeueAfter: left}
		}
		act.ScaleDown = old
	}
	done := fmt.Sprintf("side-by-side release of %s complete: all traffic on %s", st.CanaryVersion, st.CanaryVersion)
	if act.ScaleDown != "" {
		done += fmt.Sprintf(", Deployments of %s scaled to zero", old)
	}
	act.Done = true
	act.Events = []Event{{ReasonRolloutCompleted, done}}
	return api.Status{
		Phase:            api.PhaseHealthy,
		StableVersion:    st.CanaryVersion,
		CurrentStepIndex: st.StepCount,
		StepCount:        st.StepCount,
		StepStartedAt:    &metav1.MicroTime{Time: now},
		Message:          done,
	}, act
}

// rollBack ends a release whose version was edited back to stable: traffic
// to stable first, then the canary goes and the original resumes on its
// (stable) template.
func rollBack(st api.Status, routed bool, obs Observation) (api.Status, Action) {
	cur := obs.Split
	if cur.CanaryWeight > 0 || len(cur.HeaderRoutes) > 0 {
		cur.HeaderRoutes = nil
		st, act := shift(st, cur, 0, Action{})
		st.Message = "rolling back: all traffic to stable " + st.StableVersion
		return st, act
	}
	return finish(st, st.StableVersion, routed, obs, time.Time{}, Event{ReasonRolledBack, fmt.Sprintf("rolled back to %s: all traffic on stable", st.StableVersion)})
}

// finish removes the canary and leaves both pools on the stable version.
// It is reached only with no traffic on the canary (without a mesh, routed
// is false: removing the canary is what takes its traffic away).
func finish(st api.Status, stable string, routed bool, obs Observation, now time.Time, done Event) (api.Status, Action) {
	act := Action{Done: true, Events: []Event{done}, DeleteCanary: obs.Canary != nil, Unpause: obs.Paused}
	if want := (routes.Split{StableVersion: stable, CanaryVersion: stable}); routed && !obs.Split.Equal(want) {
		// Safe: the canary pool carries no traffic.
		act.Split = &want
	}
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

// HeaderRoutesAt is the set of header routes in place before step i: each
// setHeaderRoute adds or replaces its route, or removes it when it has no
// match. Routes keep the order in which they were first set.
func HeaderRoutesAt(plan *api.Plan, i int32) []api.HeaderRoute {
	var out []api.HeaderRoute
	for _, s := range plan.Steps[:min(int(i), len(plan.Steps))] {
		h := s.SetHeaderRoute
		if h == nil {
			continue
		}
		at := -1
		for j := range out {
			if out[j].Name == h.Name {
				at = j
			}
		}
		switch {
		case len(h.Match) == 0 && at >= 0:
			out = append(out[:at], out[at+1:]...)
		case len(h.Match) == 0:
		case at >= 0:
			out[at] = *h
		default:
			out = append(out, *h)
		}
	}
	return out
}

// CanaryScaleAt is the canary scale in force before step i: the last
// setCanaryScale, nil when none or after matchTrafficWeight.
func CanaryScaleAt(plan *api.Plan, i int32) *api.CanaryScale {
	var out *api.CanaryScale
	for _, s := range plan.Steps[:min(int(i), len(plan.Steps))] {
		if s.SetCanaryScale != nil {
			out = s.SetCanaryScale
			if out.MatchTrafficWeight {
				out = nil
			}
		}
	}
	return out
}

// desiredReplicas sizes the canary: by setCanaryScale when one is in force,
// else ceil(weight% × replicas). A canary that receives traffic (a weight
// or a header route) always has at least one pod.
func desiredReplicas(scale *api.CanaryScale, weight int32, headers []api.HeaderRoute, replicas int32) int32 {
	n := CanaryReplicas(weight, replicas)
	if scale != nil {
		n = scaledReplicas(scale, replicas)
	}
	if n == 0 && (weight > 0 || len(headers) > 0) {
		n = 1
	}
	return n
}

// CanaryReplicas sizes the canary for a weight: ceil(weight% × replicas),
// at least 1 so a canary always has a pod to serve its share.
func CanaryReplicas(weight, replicas int32) int32 {
	n := (weight*replicas + 99) / 100
	return max(n, 1)
}
