// Package api holds vane's user-facing contract: the label and annotation keys
// on a Deployment, the parsed strategy (Plan) and the controller's progress
// (Status). It is shaped like a future CRD's spec and status, so a CRD later is
// a copy, not a redesign.
package api

const (
	// Domain is the prefix of every label and annotation vane reads or writes.
	Domain = "vane.io"

	// LabelCanary opts a Deployment in when set to LabelCanaryEnabled. The
	// MutatingWebhookConfiguration selects only Deployments carrying it.
	LabelCanary = Domain + "/canary"
	// LabelCanaryEnabled is the only value of LabelCanary that opts in.
	LabelCanaryEnabled = "enabled"
	// LabelCanaryCanary is the value of LabelCanary on the canary
	// Deployments vane creates: they carry the label (so vane's cache, which
	// holds only Deployments with LabelCanary, sees them) but never opt in.
	LabelCanaryCanary = "canary"

	// LabelRole marks the canary Deployment vane creates and its pods, so the
	// canary's selector never overlaps the stable pods.
	LabelRole = Domain + "/role"
	// RoleCanary is the value of LabelRole on canary Deployments and pods.
	RoleCanary = "canary"

	// AnnotationStrategy carries the Argo Rollouts `strategy.canary` block as
	// YAML, with or without the leading `canary:` key.
	AnnotationStrategy = Domain + "/strategy"
	// AnnotationVersionLabel names the pod-template label whose change starts
	// a canary release. Defaults to DefaultVersionLabel.
	AnnotationVersionLabel = Domain + "/version-label"
	// AnnotationStatus is the controller's progress, as JSON (see Status).
	AnnotationStatus = Domain + "/status"
	// AnnotationAction is a one-shot request from a person (see Action); the
	// controller clears it once it acted.
	AnnotationAction = Domain + "/action"

	// Finalizer keeps a Deployment that is mid-rollout until vane has sent its
	// traffic back to stable and removed the canary.
	Finalizer = Domain + "/rollout"

	// DefaultVersionLabel is the pod-template label key used when
	// AnnotationVersionLabel is not set.
	DefaultVersionLabel = "version"

	// CanarySuffix is appended to a Deployment's name to name its canary.
	CanarySuffix = "-canary"
)
