package canary

// Adoption and catch-up: what vane records of a Deployment before a release
// runs, and the releases it starts when a version change reached the cluster
// without the webhook's hold.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/go-openapi/jsonpointer"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/internal/api"
	"github.com/vane-io/vane/internal/routes"
)

// errNotAdopted asks to look again at a Deployment that cannot be adopted
// yet.
var errNotAdopted = errors.New("not adopted yet")

// catchUp keeps track of the stable version of Deployments with no release
// in progress, and catches a version change that reached the API server
// without the webhook's hold (the webhook fails open): it pauses the native
// rollout at once and starts the release from there. It reports whether it
// wrote anything.
func (r *Reconciler) catchUp(ctx context.Context, t target, st *api.Status) (bool, error) {
	d := t.d
	version := d.Spec.Template.Labels[api.VersionLabel(d.Annotations)]
	rolled := rolledOut(d)
	switch {
	case version == "" || d.Spec.Paused || (st != nil && st.StableVersion == version):
		return false, nil
	case st == nil:
		if started, err := r.sideBySide(ctx, t, version); started || err != nil {
			return true, err
		}
		if !rolled {
			// First sight of a Deployment mid-rollout: its stable version is
			// unknown; look again once it is rolled out.
			return false, nil
		}
		return true, r.writeStatus(ctx, t, nil, api.Status{Phase: api.PhaseHealthy, StableVersion: version, Message: "stable version " + version})
	}
	plan, err := api.ParsePlan(d.Annotations)
	if rolled || err != nil {
		why := "it rolled out before vane could hold it"
		if err != nil {
			why = err.Error()
		}
		r.record(t, Event{ReasonDegraded, fmt.Sprintf("version %s → %s was not held by the webhook and rolled out natively, without a canary: %s", st.StableVersion, version, why)})
		return true, r.writeStatus(ctx, t, st, api.Status{Phase: api.PhaseHealthy, StableVersion: version, Message: "rolled out natively without a canary"})
	}
	next := api.Status{
		Phase:         api.PhaseProgressing,
		StableVersion: st.StableVersion,
		CanaryVersion: version,
		StepCount:     int32(len(plan.Steps)),
		StepStartedAt: &metav1.MicroTime{Time: r.now()},
		Message:       fmt.Sprintf("version %s → %s reached the cluster without the webhook's hold: native rollout paused, canary release started", st.StableVersion, version),
	}
	if err := r.writeStatus(ctx, t, st, next, patchOp{Op: "replace", Path: "/spec/paused", Value: true}, finalizerOp(d)); err != nil {
		return true, err
	}
	r.record(t, Event{ReasonCaughtUp, next.Message})
	return true, nil
}

// catchUpMidRelease catches a version change made in the middle of a
// release without the webhook's hold (it fails open): it records what the
// webhook would have (a new canary version restarts at step 0 with stable
// kept; the stable version rolls back), so the step machine drains the
// canary before its pool or its pods change. Guard: without it, the canary
// would take the new template while its pool, still carrying traffic,
// selects the old version's pods. A side-by-side release's Deployment is
// its own canary and is left to the step machine. (Across clusters, a
// cluster on another version holds the release instead: see NextFleet.)
func (r *Reconciler) catchUpMidRelease(ctx context.Context, t target, st api.Status) (bool, error) {
	version := t.d.Spec.Template.Labels[api.VersionLabel(t.d.Annotations)]
	was := st.CanaryVersion
	if st.Phase == api.PhaseRollingBack {
		was = st.StableVersion
	}
	if version == "" || version == was || st.SideBySide {
		return false, nil
	}
	// What the webhook would have recorded, said as a catch-up.
	next := api.StartStatus(&st, was, version, st.StepCount, r.now())
	next.Message = fmt.Sprintf("version %s → %s reached the cluster during the release from %s without the webhook's hold: native rollout held, canary restarts at step 0", was, version, st.StableVersion)
	if next.Phase == api.PhaseRollingBack {
		next.Message = fmt.Sprintf("version edited back to %s without the webhook's hold: rolling back", version)
	}
	if err := r.writeStatus(ctx, t, &st, next, patchOp{Op: "replace", Path: "/spec/paused", Value: true}); err != nil {
		return true, err
	}
	r.record(t, Event{ReasonCaughtUp, next.Message})
	return true, nil
}

// sideBySide starts a side-by-side release at the first sight of an
// opted-in Deployment whose version is not the one the stable subset of its
// DestinationRule selects: the Deployment runs a new version beside the
// Deployments of the stable one (seed 003: v1 in one cluster, v2 in
// another), it is the canary itself, and the steps move the weights from
// the stable subset to the canary subset, which vane leaves as they are.
func (r *Reconciler) sideBySide(ctx context.Context, t target, version string) (bool, error) {
	plan, err := api.ParsePlan(t.d.Annotations)
	if err != nil || !plan.Istio.BySubset() {
		return false, nil
	}
	split, err := r.router(t.d, plan).Observe(ctx)
	switch {
	case errors.Is(err, routes.ErrMissing):
		// Not adopted yet: whether this Deployment is the stable version or
		// a new one beside it depends on the subsets, and a GitOps sync
		// often creates the mesh objects after the Deployments. Their
		// creation wakes it (releasesRoutedBy) in vane's cluster; in a
		// member it looks again (errNotAdopted).
		ctrl.LoggerFrom(ctx).V(1).Info("Waiting for the mesh objects before adopting", "reason", err.Error())
		return true, errNotAdopted
	case err != nil:
		return true, err
	case split.StableVersion == "" || split.StableVersion == version || split.CanaryVersion != version:
		return false, nil
	}
	next := api.Status{
		Phase:         api.PhaseProgressing,
		StableVersion: split.StableVersion,
		CanaryVersion: version,
		StepCount:     int32(len(plan.Steps)),
		StepStartedAt: &metav1.MicroTime{Time: r.now()},
		SideBySide:    true,
		Message:       fmt.Sprintf("%s runs %s beside stable %s (subset %s of DestinationRule %s): side-by-side release started, only the weights move", t.d.Name, version, split.StableVersion, plan.Istio.StableSubset, plan.Istio.DestinationRule),
	}
	if err := r.writeStatus(ctx, t, nil, next, finalizerOp(t.d)); err != nil {
		return true, err
	}
	r.record(t, Event{ReasonStarted, next.Message})
	return true, nil
}

// writeStatus writes st (and extra ops) if the status annotation still is
// prev (nil: absent) and the version label what d says.
func (r *Reconciler) writeStatus(ctx context.Context, t target, prev *api.Status, st api.Status, extra ...patchOp) error {
	d := t.d
	key := api.VersionLabel(d.Annotations)
	ops := []patchOp{{Op: "test", Path: "/spec/template/metadata/labels/" + jsonpointer.Escape(key), Value: d.Spec.Template.Labels[key]}}
	if prev != nil {
		ops = append(ops, patchOp{Op: "test", Path: statusPointer, Value: d.Annotations[api.AnnotationStatus]})
	}
	if d.Annotations == nil {
		ops = append(ops, patchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{}})
	}
	ops = append(ops, patchOp{Op: "add", Path: statusPointer, Value: st.Encode()})
	for _, op := range extra {
		if op.Op != "" {
			ops = append(ops, op)
		}
	}
	data, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	if err := t.Client.Patch(ctx, d, client.RawPatch(types.JSONPatchType, data)); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

// finalizerOp adds vane's finalizer unless d has it (then it is a no-op).
func finalizerOp(d *appsv1.Deployment) patchOp {
	switch {
	case slices.Contains(d.Finalizers, api.Finalizer):
		return patchOp{}
	case len(d.Finalizers) == 0:
		return patchOp{Op: "add", Path: "/metadata/finalizers", Value: []string{api.Finalizer}}
	default:
		return patchOp{Op: "add", Path: "/metadata/finalizers/-", Value: api.Finalizer}
	}
}
