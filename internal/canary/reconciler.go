package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-openapi/jsonpointer"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/vane-io/vane/internal/api"
	"github.com/vane-io/vane/internal/metrics"
	"github.com/vane-io/vane/internal/routes"
)

// degradedRetry is how often a release that waits for a missing object looks
// again, besides the watches on VirtualServices and DestinationRules.
const degradedRetry = 10 * time.Second

// Reconciler drives the releases of opted-in Deployments.
type Reconciler struct {
	// Client writes, and reads what only triggers work (lists for watches).
	Client client.Client
	// Reader reads what decisions rest on, uncached (the manager's API
	// reader): a stale cache would replay an old step's move.
	Reader   client.Reader
	Recorder events.EventRecorder
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Workers is how many releases are reconciled at once; a release is
	// never reconciled by two at a time. 0 means controller-runtime's
	// default, 1.
	Workers int
}

// routingIndex indexes opted-in Deployments in the cache by the Istio
// objects their strategy names (see routingKeys).
const routingIndex = "vane.io/routing"

// routingKey is an index value: an Istio object's kind and name.
func routingKey(kind, name string) string { return kind + "/" + name }

// routingKeys names the VirtualService and DestinationRule an opted-in
// Deployment's strategy routes through. A Deployment whose strategy does
// not parse names none: it cannot route through anything yet.
func routingKeys(o client.Object) []string {
	if o.GetLabels()[api.LabelCanary] != api.LabelCanaryEnabled {
		return nil
	}
	plan, err := api.ParsePlan(o.GetAnnotations())
	if err != nil {
		return nil
	}
	keys := []string{routingKey("VirtualService", plan.Istio.VirtualService)}
	if plan.Istio.DestinationRule != "" {
		keys = append(keys, routingKey("DestinationRule", plan.Istio.DestinationRule))
	}
	return keys
}

// SetupWithManager registers the reconciler: opted-in Deployments, their
// canaries, and the Istio objects their releases route through.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &appsv1.Deployment{}, routingIndex, routingKeys); err != nil {
		return fmt.Errorf("index deployments by routing: %w", err)
	}
	// Opted-in Deployments, and those whose opt-in label changed to another
	// value (their release must end). A removed label reaches us as a delete
	// from the label-scoped cache.
	optedIn := predicate.NewPredicateFuncs(func(o client.Object) bool {
		v, ok := o.GetLabels()[api.LabelCanary]
		return ok && v != api.LabelCanaryCanary
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("canary").
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers}).
		For(&appsv1.Deployment{}, builder.WithPredicates(optedIn)).
		Owns(&appsv1.Deployment{}).
		// Istio objects only wake releases up (decisions read them uncached):
		// their cache keeps metadata only.
		Watches(&networkingv1.VirtualService{}, handler.EnqueueRequestsFromMapFunc(r.releasesRoutedBy("VirtualService")), builder.OnlyMetadata).
		Watches(&networkingv1.DestinationRule{}, handler.EnqueueRequestsFromMapFunc(r.releasesRoutedBy("DestinationRule")), builder.OnlyMetadata).
		Complete(r)
}

// releasesRoutedBy maps a change of an Istio object of kind to the releases
// in progress whose strategy names it, so a release waiting for it proceeds
// as soon as it appears. Only those: with every release of the namespace,
// each weight a release writes would wake all the others, and N releases
// in one namespace would cost N² reconciles.
func (r *Reconciler) releasesRoutedBy(kind string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list appsv1.DeploymentList
		if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{routingIndex: routingKey(kind, o.GetName())}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "List releases", "kind", kind, "name", o.GetName())
			return nil
		}
		var out []reconcile.Request
		for i := range list.Items {
			if st, _ := api.StatusFrom(list.Items[i].Annotations); st.InProgress() {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
			}
		}
		return out
	}
}

// Reconcile loads a release, makes its next move and persists its status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	d := &appsv1.Deployment{}
	if err := r.Reader.Get(ctx, req.NamespacedName, d); err != nil {
		if apierrors.IsNotFound(err) {
			metrics.ForgetRelease(req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	st, err := api.StatusFrom(d.Annotations)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Status unreadable; the release is left alone")
		return ctrl.Result{}, nil
	}
	if !d.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, d, st)
	}
	action, err := api.ActionFrom(d.Annotations)
	if err == nil && action != "" && !st.InProgress() {
		err = fmt.Errorf("action %s ignored: no release is in progress", action)
	}
	if err != nil {
		return ctrl.Result{}, r.ignoreAction(ctx, d, err.Error())
	}
	optedIn := d.Labels[api.LabelCanary] == api.LabelCanaryEnabled
	switch {
	case !optedIn && st.InProgress():
		return ctrl.Result{}, r.optOut(ctx, d, *st)
	case !optedIn:
		return ctrl.Result{}, nil
	case !st.InProgress():
		return ctrl.Result{}, r.idle(ctx, d, st)
	}
	return r.step(ctx, d, *st, action)
}

// idle looks after a Deployment with no release in progress: it catches an
// unheld version change and drops a finalizer left from a release.
func (r *Reconciler) idle(ctx context.Context, d *appsv1.Deployment, st *api.Status) error {
	if done, err := r.catchUp(ctx, d, st); done || err != nil {
		return err
	}
	if st == nil {
		return nil
	}
	metrics.ObserveRelease(d.Namespace, d.Name, *st)
	if slices.Contains(d.Finalizers, api.Finalizer) {
		return r.persist(ctx, d, *st, Action{Done: true})
	}
	return nil
}

// step makes the next move of a release in progress: observe, decide
// (Next), act, persist, tell.
func (r *Reconciler) step(ctx context.Context, d *appsv1.Deployment, st api.Status, action api.Action) (ctrl.Result, error) {
	plan, err := api.ParsePlan(d.Annotations)
	if err != nil {
		return r.degraded(ctx, d, st, err)
	}
	router := r.router(d, plan)
	obs, err := r.observe(ctx, d, router)
	if err != nil {
		return r.degraded(ctx, d, st, err)
	}
	obs.Action = action
	next, act := Next(st, plan, obs, r.now())
	ctrl.LoggerFrom(ctx).V(1).Info("Decided", "phase", next.Phase, "step", next.CurrentStepIndex, "weight", next.CanaryWeight, "message", next.Message)
	if err := r.act(ctx, d, router, act); err != nil {
		return r.degraded(ctx, d, st, err)
	}
	// A step starts once the previous step's move is made (its weight
	// written), so a pause lasts its full duration as users see it.
	if next.CurrentStepIndex != st.CurrentStepIndex && next.StepStartedAt != nil {
		next.StepStartedAt.Time = r.now()
	}
	if err := r.persist(ctx, d, next, act); err != nil {
		return ctrl.Result{}, err
	}
	metrics.ObserveRelease(d.Namespace, d.Name, next)
	if n := next.CurrentStepIndex - st.CurrentStepIndex; n > 0 {
		metrics.StepsCompleted(d.Namespace, d.Name, int(n))
	}
	r.record(d, act.Events...)
	return ctrl.Result{RequeueAfter: act.RequeueAfter}, nil
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// observe reads the canary Deployment and the traffic split.
func (r *Reconciler) observe(ctx context.Context, d *appsv1.Deployment, router routes.Router) (Observation, error) {
	obs := Observation{
		Replicas:        ptrOr(d.Spec.Replicas, 1),
		StableAvailable: d.Status.AvailableReplicas,
		Paused:          d.Spec.Paused,
		Rolled:          rolledOut(d),
	}
	c := &appsv1.Deployment{}
	err := r.getCanary(ctx, types.NamespacedName{Namespace: d.Namespace, Name: CanaryName(d)}, c, true)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return obs, fmt.Errorf("get canary deployment: %w", err)
	case c.DeletionTimestamp.IsZero():
		replicas := ptrOr(c.Spec.Replicas, 1)
		obs.Canary = &CanaryObservation{
			Replicas: replicas,
			Ready:    canaryMatches(c, desiredCanary(d, replicas)) && rolledOut(c),
		}
	}
	if router == nil {
		return obs, nil
	}
	obs.Split, err = router.Observe(ctx)
	return obs, err
}

// router is the Router of a release, nil without trafficRouting: then the
// split is the canary's size, which the step machine sets through
// Action.CanaryReplicas, and there is no mesh object to read or write.
func (r *Reconciler) router(d *appsv1.Deployment, plan *api.Plan) routes.Router {
	if !plan.Routed() {
		return nil
	}
	return routes.NewIstio(r.Reader, r.Client, d.Namespace, api.VersionLabel(d.Annotations), plan.Istio)
}

// act carries out a move: canary first, then traffic, then removal.
func (r *Reconciler) act(ctx context.Context, d *appsv1.Deployment, router routes.Router, act Action) error {
	if act.CanaryReplicas != nil {
		if err := r.ensureCanary(ctx, d, *act.CanaryReplicas); err != nil {
			return err
		}
	}
	if act.Split != nil {
		if router == nil {
			return fmt.Errorf("a traffic split was asked of a release without trafficRouting: %+v", *act.Split)
		}
		wrote, err := router.Ensure(ctx, *act.Split)
		if err != nil {
			return err
		}
		// Recorded as soon as it is written: a status write that fails
		// next does not undo the traffic change.
		if wrote {
			s := act.Split
			r.record(d, Event{ReasonTrafficShifted, fmt.Sprintf("canary %s weight %d%%, stable %s weight %d%%", poolVersion(s.CanaryVersion), s.CanaryWeight, poolVersion(s.StableVersion), 100-s.CanaryWeight)})
		}
	}
	if act.DeleteCanary {
		return r.deleteCanary(ctx, d)
	}
	return nil
}

func (r *Reconciler) ensureCanary(ctx context.Context, d *appsv1.Deployment, replicas int32) error {
	want := desiredCanary(d, replicas)
	cur := &appsv1.Deployment{}
	err := r.getCanary(ctx, client.ObjectKeyFromObject(want), cur, false)
	if apierrors.IsNotFound(err) {
		if err := r.Client.Create(ctx, want); err != nil {
			return fmt.Errorf("create canary deployment: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get canary deployment: %w", err)
	}
	if canaryMatches(cur, want) {
		return nil
	}
	cur.Spec.Replicas = want.Spec.Replicas
	cur.Spec.Template = want.Spec.Template
	if err := r.Client.Update(ctx, cur); err != nil {
		return fmt.Errorf("update canary deployment: %w", err)
	}
	return nil
}

// getCanary reads a canary Deployment from the cache, which holds the
// canaries (they carry vane.io/canary): every reconcile looks at it, and at
// 1,000 releases uncached reads made reconciles queue behind each other.
// A cached copy is a state the canary really had, and a write from it
// carries its resourceVersion, so a stale copy costs a conflict and a
// retry. "Not found" is confirmed uncached, so that a canary created a
// moment ago is neither created twice nor left behind. With confirmReady, a
// copy that has rolled out is confirmed uncached too: traffic moves on
// that answer, and only a read of now tells that vane has not meanwhile
// resized it or changed its template (the cache may lag vane's own write).
func (r *Reconciler) getCanary(ctx context.Context, key types.NamespacedName, c *appsv1.Deployment, confirmReady bool) error {
	err := r.Client.Get(ctx, key, c)
	if apierrors.IsNotFound(err) || (err == nil && confirmReady && rolledOut(c)) {
		err = r.Reader.Get(ctx, key, c)
	}
	return err
}

func (r *Reconciler) deleteCanary(ctx context.Context, d *appsv1.Deployment) error {
	c := &appsv1.Deployment{}
	c.Namespace, c.Name = d.Namespace, CanaryName(d)
	if err := r.Client.Delete(ctx, c, client.PropagationPolicy("Background")); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete canary deployment: %w", err)
	}
	return nil
}

// persist writes the status, the unpause and the finalizer's removal in one
// JSON patch that first tests the status annotation, the version label and
// the finalizers it read: an edit made meanwhile (a new version, say) is never
// overwritten, the patch fails and the release is reconciled again from the
// fresh object. Status writes of the Deployment controller do not conflict.
func (r *Reconciler) persist(ctx context.Context, d *appsv1.Deployment, st api.Status, act Action) error {
	ops := []patchOp{}
	test := func(path string, v any) { ops = append(ops, patchOp{Op: "test", Path: path, Value: v}) }
	oldStatus, hadStatus := d.Annotations[api.AnnotationStatus]
	newStatus := st.Encode()
	finalizers := d.Finalizers
	switch {
	case act.Done:
		finalizers = slices.DeleteFunc(slices.Clone(d.Finalizers), func(f string) bool { return f == api.Finalizer })
	case st.InProgress() && !slices.Contains(d.Finalizers, api.Finalizer):
		// Added by the controller, not the webhook: a finalizer set in an
		// apply's admission would belong to the applier, and its next apply
		// would drop it.
		finalizers = append(slices.Clone(d.Finalizers), api.Finalizer)
	}
	unpause := act.Unpause && d.Spec.Paused
	action, hasAction := d.Annotations[api.AnnotationAction]
	clearAction := act.ClearAction && hasAction
	if newStatus == oldStatus && !unpause && slices.Equal(finalizers, d.Finalizers) && !clearAction {
		return nil
	}
	key := api.VersionLabel(d.Annotations)
	test("/spec/template/metadata/labels/"+jsonpointer.Escape(key), d.Spec.Template.Labels[key])
	if hadStatus {
		test(statusPointer, oldStatus)
	}
	ops = append(ops, patchOp{Op: "add", Path: statusPointer, Value: newStatus})
	if unpause {
		ops = append(ops, patchOp{Op: "replace", Path: "/spec/paused", Value: false})
	}
	if clearAction {
		test(actionPointer, action)
		ops = append(ops, patchOp{Op: "remove", Path: actionPointer})
	}
	switch {
	case slices.Equal(finalizers, d.Finalizers):
	case len(d.Finalizers) == 0:
		ops = append(ops, patchOp{Op: "add", Path: "/metadata/finalizers", Value: finalizers})
	default:
		test("/metadata/finalizers", d.Finalizers)
		ops = append(ops, patchOp{Op: "replace", Path: "/metadata/finalizers", Value: finalizers})
	}
	if d.Annotations == nil {
		ops = slices.Insert(ops, 0, patchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{}})
	}
	data, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	if err := r.Client.Patch(ctx, d, client.RawPatch(types.JSONPatchType, data)); err != nil {
		return fmt.Errorf("patch deployment status: %w", err)
	}
	return nil
}

// patchOp is one RFC 6902 operation. Value is always sent, so that a test
// for false or "" means what it says.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// JSON pointers of the status and action annotations.
var (
	statusPointer = "/metadata/annotations/" + jsonpointer.Escape(api.AnnotationStatus)
	actionPointer = "/metadata/annotations/" + jsonpointer.Escape(api.AnnotationAction)
)

// ignoreAction clears an action that cannot apply and says why in a
// warning Event.
func (r *Reconciler) ignoreAction(ctx context.Context, d *appsv1.Deployment, why string) error {
	ops := []patchOp{
		{Op: "test", Path: actionPointer, Value: d.Annotations[api.AnnotationAction]},
		{Op: "remove", Path: actionPointer},
	}
	data, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	if err := r.Client.Patch(ctx, d, client.RawPatch(types.JSONPatchType, data)); err != nil {
		return fmt.Errorf("clear action: %w", err)
	}
	r.record(d, Event{ReasonActionIgnored, why})
	return nil
}

// degraded records why a release cannot proceed and retries later. Errors
// other than a missing object or an invalid strategy are returned for
// backoff.
func (r *Reconciler) degraded(ctx context.Context, d *appsv1.Deployment, st api.Status, cause error) (ctrl.Result, error) {
	if !errors.Is(cause, routes.ErrMissing) && !errors.Is(cause, api.ErrInvalidStrategy) {
		return ctrl.Result{}, cause
	}
	changed := st.Message != cause.Error()
	st.Message = cause.Error()
	// A rollback stays a rollback: Degraded would lose what to resume.
	if st.Phase != api.PhaseRollingBack {
		changed = changed || st.Phase != api.PhaseDegraded
		st.Phase = api.PhaseDegraded
	}
	if err := r.persist(ctx, d, st, Action{}); err != nil {
		return ctrl.Result{}, err
	}
	metrics.ObserveRelease(d.Namespace, d.Name, st)
	if changed {
		r.record(d, Event{ReasonDegraded, cause.Error()})
	}
	return ctrl.Result{RequeueAfter: degradedRetry}, nil
}

// finalize runs when a Deployment is deleted mid-release: all traffic back to
// stable (its pods are still there while the finalizer holds the
// Deployment), the canary removed, then the finalizer.
func (r *Reconciler) finalize(ctx context.Context, d *appsv1.Deployment, st *api.Status) error {
	if !slices.Contains(d.Finalizers, api.Finalizer) {
		return nil
	}
	if err := r.drain(ctx, d, st); err != nil {
		return err
	}
	orig := d.DeepCopy()
	d.Finalizers = slices.DeleteFunc(d.Finalizers, func(f string) bool { return f == api.Finalizer })
	if err := r.Client.Patch(ctx, d, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("remove finalizer: %w", err)
	}
	return nil
}

// optOut ends a release whose Deployment no longer opts in (its label was
// removed or changed): traffic and header routes back to stable, the canary
// removed, and the native rollout resumes, as without vane.
func (r *Reconciler) optOut(ctx context.Context, d *appsv1.Deployment, st api.Status) error {
	if err := r.drain(ctx, d, &st); err != nil {
		return err
	}
	// The template's version rolls out natively: it is the stable one now.
	version := d.Spec.Template.Labels[api.VersionLabel(d.Annotations)]
	next := api.Status{Phase: api.PhaseHealthy, StableVersion: version, Message: fmt.Sprintf("opted out during the release of %s: canary removed, native rollout resumed", st.CanaryVersion)}
	if err := r.persist(ctx, d, next, Action{Unpause: true, Done: true}); err != nil {
		return err
	}
	r.record(d, Event{ReasonOptedOut, next.Message})
	return nil
}

// drain sends a release's traffic back to stable (no canary weight, no
// header routes) and removes the canary, for a release that ends outside
// the step machine. Missing mesh objects are no obstacle.
func (r *Reconciler) drain(ctx context.Context, d *appsv1.Deployment, st *api.Status) error {
	if plan, err := api.ParsePlan(d.Annotations); err == nil && st.InProgress() && plan.Routed() {
		router := r.router(d, plan)
		split, err := router.Observe(ctx)
		if err == nil && (split.CanaryWeight > 0 || len(split.HeaderRoutes) > 0) {
			split.CanaryWeight, split.HeaderRoutes = 0, nil
			_, err = router.Ensure(ctx, split)
		}
		if err != nil && !errors.Is(err, routes.ErrMissing) {
			return err
		}
	}
	return r.deleteCanary(ctx, d)
}

// catchUp keeps track of the stable version of Deployments with no release
// in progress, and catches a version change that reached the API server
// without the webhook's hold (the webhook fails open): it pauses the native
// rollout at once and starts the release from there. It reports whether it
// wrote anything.
func (r *Reconciler) catchUp(ctx context.Context, d *appsv1.Deployment, st *api.Status) (bool, error) {
	version := d.Spec.Template.Labels[api.VersionLabel(d.Annotations)]
	rolled := rolledOut(d)
	switch {
	case version == "" || d.Spec.Paused || (st != nil && st.StableVersion == version):
		return false, nil
	case st == nil && !rolled:
		// First sight of a Deployment mid-rollout: its stable version is
		// unknown; look again once it is rolled out.
		return false, nil
	case st == nil:
		return true, r.writeStatus(ctx, d, nil, api.Status{Phase: api.PhaseHealthy, StableVersion: version, Message: "stable version " + version})
	}
	plan, err := api.ParsePlan(d.Annotations)
	if rolled || err != nil {
		why := "it rolled out before vane could hold it"
		if err != nil {
			why = err.Error()
		}
		r.record(d, Event{ReasonDegraded, fmt.Sprintf("version %s → %s was not held by the webhook and rolled out natively, without a canary: %s", st.StableVersion, version, why)})
		return true, r.writeStatus(ctx, d, st, api.Status{Phase: api.PhaseHealthy, StableVersion: version, Message: "rolled out natively without a canary"})
	}
	next := api.Status{
		Phase:         api.PhaseProgressing,
		StableVersion: st.StableVersion,
		CanaryVersion: version,
		StepCount:     int32(len(plan.Steps)),
		StepStartedAt: &metav1.MicroTime{Time: r.now()},
		Message:       fmt.Sprintf("version %s → %s reached the cluster without the webhook's hold: native rollout paused, canary release started", st.StableVersion, version),
	}
	if err := r.writeStatus(ctx, d, st, next, patchOp{Op: "replace", Path: "/spec/paused", Value: true}, finalizerOp(d)); err != nil {
		return true, err
	}
	r.record(d, Event{ReasonCaughtUp, next.Message})
	return true, nil
}

// writeStatus writes st (and extra ops) if the status annotation still is
// prev (nil: absent) and the version label what d says.
func (r *Reconciler) writeStatus(ctx context.Context, d *appsv1.Deployment, prev *api.Status, st api.Status, extra ...patchOp) error {
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
	if err := r.Client.Patch(ctx, d, client.RawPatch(types.JSONPatchType, data)); err != nil {
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

// record records Events on d; ActionIgnored and RolloutDegraded are
// warnings.
func (r *Reconciler) record(d *appsv1.Deployment, evs ...Event) {
	for _, e := range evs {
		kind := corev1.EventTypeNormal
		if e.Reason == ReasonActionIgnored || e.Reason == ReasonDegraded || e.Reason == ReasonCaughtUp {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(d, nil, kind, e.Reason, "Release", "%s", e.Message)
	}
}

func ptrOr(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

// poolVersion names the version a pool selects ("" selects them all).
func poolVersion(v string) string {
	if v == "" {
		return "(any version)"
	}
	return v
}
