package api

import (
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Phase is where a release stands.
type Phase string

const (
	// PhaseProgressing is a release walking its steps (weights, timed pauses).
	PhaseProgressing Phase = "Progressing"
	// PhasePaused is a release at a `pause: {}` step, waiting for a person.
	PhasePaused Phase = "Paused"
	// PhasePromoting is a release past its steps, moving the original to the
	// new version.
	PhasePromoting Phase = "Promoting"
	// PhaseRollingBack means the version was edited back to stable mid-release;
	// traffic returns to stable and the canary is removed.
	PhaseRollingBack Phase = "RollingBack"
	// PhaseDegraded means the release cannot proceed (a referenced object or
	// route is missing, or the strategy is invalid); it waits and retries.
	PhaseDegraded Phase = "Degraded"
	// PhaseAborted means a person aborted the release; all traffic on stable, both
	// pools on the stable version, the canary removed, the Deployment still
	// held on the new template until it is retried or its version is edited.
	PhaseAborted Phase = "Aborted"
	// PhaseHealthy means no release in progress; all traffic on stable.
	PhaseHealthy Phase = "Healthy"
)

// Action is what a person asks of a release through AnnotationAction.
type Action string

const (
	// ActionPromote ends the current pause.
	ActionPromote Action = "promote"
	// ActionPromoteFull skips the remaining steps and promotes.
	ActionPromoteFull Action = "promote-full"
	// ActionAbort sends all traffic to stable at once, then points the canary
	// pool at the stable version and removes the canary.
	ActionAbort Action = "abort"
	// ActionRetry restarts an aborted release from its first step.
	ActionRetry Action = "retry"
)

// Actions lists the accepted values of AnnotationAction.
var Actions = []Action{ActionPromote, ActionPromoteFull, ActionAbort, ActionRetry}

// ActionFrom reads AnnotationAction: "" when absent, an error naming the
// accepted values when unknown.
func ActionFrom(annotations map[string]string) (Action, error) {
	v, ok := annotations[AnnotationAction]
	if !ok {
		return "", nil
	}
	for _, a := range Actions {
		if Action(v) == a {
			return a, nil
		}
	}
	return "", fmt.Errorf("annotation %s: %q is not an action; use one of promote, promote-full, abort, retry", AnnotationAction, v)
}

// Status is the controller's progress, kept in AnnotationStatus so that a
// restarted controller resumes where it was.
type Status struct {
	Phase Phase `json:"phase"`
	// StableVersion and CanaryVersion are the version label values of the
	// stable and canary pods.
	StableVersion string `json:"stableVersion"`
	CanaryVersion string `json:"canaryVersion,omitempty"`
	// CurrentStepIndex is the step being run; equal to StepCount once all
	// steps are done.
	CurrentStepIndex int32 `json:"currentStepIndex"`
	StepCount        int32 `json:"stepCount"`
	// CanaryWeight is the percentage of the routes' traffic on the canary.
	CanaryWeight int32 `json:"canaryWeight"`
	// StepStartedAt is when the current step began, to the microsecond; timed
	// pauses count from it.
	StepStartedAt *metav1.MicroTime `json:"stepStartedAt,omitempty"`
	// Message says, for a person, what the release waits for.
	Message string `json:"message,omitempty"`
	// SideBySide marks a release whose Deployment is itself the canary: it
	// runs the new version beside other Deployments (often in other
	// clusters) that run the stable one, and only the weights move.
	SideBySide bool `json:"sideBySide,omitempty"`
	// Members is each cluster's part of a release that spans several
	// clusters (absent when vane has no member clusters).
	Members []MemberStatus `json:"members,omitempty"`
}

// MemberStatus is one cluster's part of a release.
type MemberStatus struct {
	// Cluster is the member's name (its remote Secret's key), or vane's own
	// cluster's name (--cluster-name).
	Cluster string `json:"cluster"`
	// Version is the version label of the member's Deployment template.
	Version string `json:"version"`
	// Canary is "ready/desired" pods of the member's canary, "" without one.
	Canary string `json:"canary,omitempty"`
	// Waiting says what the release waits for in this member, "" when
	// nothing.
	Waiting string `json:"waiting,omitempty"`
}

// InProgress reports whether a release is under way.
func (s *Status) InProgress() bool {
	return s != nil && s.Phase != PhaseHealthy
}

// StatusFrom reads AnnotationStatus. It returns nil when the annotation is
// absent (no release ever started).
func StatusFrom(annotations map[string]string) (*Status, error) {
	v, ok := annotations[AnnotationStatus]
	if !ok {
		return nil, nil
	}
	var s Status
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return nil, fmt.Errorf("annotation %s is not valid JSON: %w", AnnotationStatus, err)
	}
	return &s, nil
}

// Encode renders the status as the annotation value.
func (s *Status) Encode() string {
	b, err := json.Marshal(s)
	if err != nil {
		// Status holds only strings, integers and a time: it always marshals.
		panic(err)
	}
	return string(b)
}

// StartStatus is the status of a release that starts with an edit of the
// template's version from oldVersion to newVersion, prev being the status
// before it (nil when none). An edit in the middle of a release keeps its
// stable version and restarts the canary at step 0; an edit back to the
// stable version rolls the release back; one cluster of a release that
// spans several catching up with the others (its GitOps sync arrived
// later) joins the release where it stands. The webhook records it on the
// edit; the controller, when an edit reached the cluster without the
// webhook's hold.
func StartStatus(prev *Status, oldVersion, newVersion string, steps int32, now time.Time) Status {
	st := Status{
		Phase:         PhaseProgressing,
		StableVersion: oldVersion,
		CanaryVersion: newVersion,
		StepCount:     steps,
		StepStartedAt: &metav1.MicroTime{Time: now.UTC()},
		Message:       fmt.Sprintf("version %s → %s: native rollout held, canary release started", oldVersion, newVersion),
	}
	if prev.InProgress() && prev.Phase != PhaseRollingBack && prev.StableVersion == oldVersion && prev.CanaryVersion == newVersion {
		return *prev
	}
	if prev.InProgress() {
		st.StableVersion = prev.StableVersion
		st.CanaryWeight = prev.CanaryWeight
		st.Message = fmt.Sprintf("version %s → %s during a release from %s: canary restarts at step 0", oldVersion, newVersion, prev.StableVersion)
	}
	if newVersion == st.StableVersion {
		st.Phase = PhaseRollingBack
		st.CanaryVersion = oldVersion
		st.Message = fmt.Sprintf("version edited back to %s: rolling back", newVersion)
	}
	return st
}
