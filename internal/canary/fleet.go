package canary

import (
	"fmt"
	"time"

	"github.com/vane-io/vane/internal/api"
	"github.com/vane-io/vane/internal/routes"
)

// MemberObservation is what the reconciler saw of one cluster's part of a
// release: its Deployment (same namespace and name in every cluster) and
// its canary. The traffic split and the action are shared.
type MemberObservation struct {
	// Cluster names the cluster.
	Cluster string
	// Version is the version label of the Deployment's template.
	Version string
	Observation
}

// MemberMove is what one cluster's Deployment and canary need next.
type MemberMove struct {
	// CanaryReplicas, DeleteCanary and Unpause are as in Action.
	CanaryReplicas *int32
	DeleteCanary   bool
	Unpause        bool
	// Waiting says why this cluster holds the release, "" when it does not.
	Waiting string
}

// NextFleet decides the next move of a release whose Deployment runs in
// several clusters (one cluster is the degenerate case: NextFleet is then
// Next). Each cluster decides with Next from its own Deployment and canary;
// the shared moves (the weights, the step, the status) are made only when
// all agree, so a step's weight is written only once the canaries of every
// cluster are ready and the native rollout is unpaused only once every
// cluster is ready for it.
//
// A cluster whose Deployment does not run the release's version yet (its
// GitOps sync has not arrived) holds the release and says so, except for an
// abort, which never waits. Each cluster's own moves (its canary's size, its
// removal, its unpause) are made as its Next asks even while another holds
// the release: their guards rest on the shared split, which only moves when
// all agree.
func NextFleet(st api.Status, plan *api.Plan, obs []MemberObservation, now time.Time) (api.Status, Action, []MemberMove) {
	want := st.CanaryVersion
	if st.Phase == api.PhaseRollingBack {
		want = st.StableVersion
	}
	// The mesh sends stable traffic to the stable pods of every cluster.
	var stableAvailable int32
	for _, o := range obs {
		stableAvailable += o.StableAvailable
	}
	type decision struct {
		st      api.Status
		act     Action
		waiting string
	}
	ds := make([]decision, len(obs))
	for i, o := range obs {
		if len(obs) > 1 && o.Version != want && o.Action != api.ActionAbort {
			ds[i].waiting = fmt.Sprintf("its Deployment runs version %s, not %s yet", o.Version, want)
			continue
		}
		o.StableAvailable = stableAvailable
		ds[i].st, ds[i].act = Next(st, plan, o.Observation, now)
	}

	// The clusters that run the release's version must agree. Those that do
	// not yet hold back only the moves that would put traffic on the
	// canary or end a step: pointing the pools at the versions, or taking
	// traffic away, goes on without them.
	lead, agree := -1, true
	var behind []int
	for i, d := range ds {
		switch {
		case d.waiting != "":
			behind = append(behind, i)
		case lead < 0:
			lead = i
		default:
			agree = agree && sameMove(ds[lead].st, ds[lead].act, d.st, d.act)
		}
	}
	agree = agree && lead >= 0 && (len(behind) == 0 || trafficStays(st, ds[lead].st, ds[lead].act, obs[lead].Split))
	moves := make([]MemberMove, len(obs))
	for i, d := range ds {
		moves[i] = MemberMove{CanaryReplicas: d.act.CanaryReplicas, DeleteCanary: d.act.DeleteCanary, Unpause: d.act.Unpause, Waiting: d.waiting}
		if !agree && d.waiting == "" && !moved(st, d.st, d.act) {
			moves[i].Waiting = d.st.Message
		}
	}
	if agree {
		next, shared := ds[lead].st, ds[lead].act
		shared.CanaryReplicas, shared.DeleteCanary, shared.Unpause = nil, false, false
		for _, d := range ds {
			shared.RequeueAfter = minPositive(shared.RequeueAfter, d.act.RequeueAfter)
		}
		if len(behind) > 0 {
			next.Message = fmt.Sprintf("waiting for cluster %s: %s", obs[behind[0]].Cluster, ds[behind[0]].waiting)
		}
		return next, shared, moves
	}
	// Held: the status stays where it is and says which cluster holds it.
	held := st
	held.StepCount = int32(len(plan.Steps))
	held.Message = "waiting for the clusters to agree"
	var shared Action
	for i, m := range moves {
		if m.Waiting != "" {
			held.Message = fmt.Sprintf("waiting for cluster %s: %s", obs[i].Cluster, m.Waiting)
			break
		}
	}
	for _, d := range ds {
		shared.RequeueAfter = minPositive(shared.RequeueAfter, d.act.RequeueAfter)
	}
	return held, shared, moves
}

// sameMove reports whether two clusters' decisions make the same shared
// move: the same status (but for its message) and the same split.
func sameMove(a api.Status, aa Action, b api.Status, ba Action) bool {
	a.Message, b.Message = "", ""
	if a.Encode() != b.Encode() || aa.Done != ba.Done || aa.ClearAction != ba.ClearAction {
		return false
	}
	if aa.Split == nil || ba.Split == nil {
		return aa.Split == nil && ba.Split == nil
	}
	return aa.Split.Equal(*ba.Split)
}

// trafficStays reports whether a move neither ends a step nor the release
// nor sends more traffic to the canary than cur does: what may happen while
// a cluster has not synced the release's version yet.
func trafficStays(st, next api.Status, act Action, cur routes.Split) bool {
	if next.CurrentStepIndex != st.CurrentStepIndex || next.Phase != st.Phase && next.Phase != api.PhaseProgressing || act.Done || act.Unpause {
		return false
	}
	return act.Split == nil || act.Split.CanaryWeight <= cur.CanaryWeight && len(act.Split.HeaderRoutes) <= len(cur.HeaderRoutes)
}

// moved reports whether a decision changes the release: its status (but
// for its message) or the split.
func moved(st, next api.Status, act Action) bool {
	st.Message, next.Message = "", ""
	st.StepCount = next.StepCount
	return act.Split != nil || act.Done || st.Encode() != next.Encode()
}

func minPositive(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}
