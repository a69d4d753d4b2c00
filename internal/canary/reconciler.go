package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-openapi/jsonpointer"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

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
	// ClusterName names the cluster vane runs in, in the status of a
	// release that spans clusters.
	ClusterName string
	// Members lists the member clusters, whose Deployments of the same
	// namespace and name take part in the same release; nil when none. The
	// mesh objects (VirtualServices, DestinationRules) are always read and
	// written in vane's own cluster.
	Members func() []Cluster
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Workers is how many releases are reconciled at once; a release is
	// never reconciled by two at a time. 0 means controller-runtime's
	// default, 1.
	Workers int

	ctrl     controller.Controller
	wakeOnce sync.Once
	wakeCh   chan event.GenericEvent
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
	c, err := ctrl.NewControllerManagedBy(mgr).
		Named("canary").
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers}).
		For(&appsv1.Deployment{}, builder.WithPredicates(optedIn)).
		Owns(&appsv1.Deployment{}).
		// Istio objects only wake releases up (decisions read them uncached):
		// their cache keeps metadata only.
		Watches(&networkingv1.VirtualService{}, handler.EnqueueRequestsFromMapFunc(r.releasesRoutedBy("VirtualService")), builder.OnlyMetadata).
		Watches(&networkingv1.DestinationRule{}, handler.EnqueueRequestsFromMapFunc(r.releasesRoutedBy("DestinationRule")), builder.OnlyMetadata).
		Watches(&appsv1.Deployment{}, handler.Funcs{UpdateFunc: stepAdvanced}, builder.WithPredicates(optedIn)).
		WatchesRawSource(source.Channel(r.wake(), &handler.EnqueueRequestForObject{})).
		Build(r)
	r.ctrl = c
	return err
}

func (r *Reconciler) wake() chan event.GenericEvent {
	r.wakeOnce.Do(func() { r.wakeCh = make(chan event.GenericEvent, 1024) })
	return r.wakeCh
}

// progressPriority is the work queue priority of the moves a release makes
// on its own schedule: a timed pause's end, and the move after a step
// advance. controller-runtime's priority queue serves them before the
// reconciles other watch events wake (priority 0, mostly the Deployment
// controller's status writes), which at 1,000 releases queued for tens of
// seconds: a timer fired on time, then waited its turn behind them.
const progressPriority = 10

// stepAdvanced wakes a release at progressPriority when its status shows a
// step it did not show before (a release that starts, a step done): its
// next move is due now. The other watch of the same Deployments (For)
// wakes it too, at priority 0; the queue keeps the higher.
func stepAdvanced(_ context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	prev, _ := api.StatusFrom(e.ObjectOld.GetAnnotations())
	cur, err := api.StatusFrom(e.ObjectNew.GetAnnotations())
	pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request])
	if err != nil || !ok || !cur.InProgress() || (prev.InProgress() && prev.CurrentStepIndex == cur.CurrentStepIndex) {
		return
	}
	pq.AddWithOpts(priorityqueue.AddOpts{Priority: new(progressPriority)}, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.ObjectNew)})
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
			// Releases in progress, and Deployments not adopted yet (they
			// wait for their mesh objects, see sideBySide).
			if st, _ := api.StatusFrom(list.Items[i].Annotations); st == nil || st.InProgress() {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
			}
		}
		return out
	}
}

// Reconcile loads a release from every cluster that has its Deployment,
// makes its next move and persists its status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	clusters := r.clusters()
	if len(clusters) > 1 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, memberTimeout)
		defer cancel()
	}
	var ts []target
	var unreachable []error
	for _, c := range clusters {
		d := &appsv1.Deployment{}
		err := c.Reader.Get(ctx, req.NamespacedName, d)
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil && len(clusters) == 1:
			return ctrl.Result{}, err
		case err != nil:
			metrics.MemberUnreachable(c.Name)
			unreachable = append(unreachable, fmt.Errorf("cluster %s is %w: %w", c.Name, errUnreachable, err))
			continue
		}
		t := target{Cluster: c, d: d}
		st, err := api.StatusFrom(d.Annotations)
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Status unreadable; the release is left alone", "cluster", c.Name)
			continue
		}
		if !d.DeletionTimestamp.IsZero() {
			if err := r.finalize(ctx, t, st); err != nil {
				return ctrl.Result{}, err
			}
			continue
		}
		action, err := api.ActionFrom(d.Annotations)
		if err == nil && action != "" && !st.InProgress() && len(clusters) == 1 {
			err = fmt.Errorf("action %s ignored: no release is in progress", action)
		}
		if err != nil {
			return ctrl.Result{}, r.ignoreAction(ctx, t, err.Error())
		}
		optedIn := d.Labels[api.LabelCanary] == api.LabelCanaryEnabled
		switch {
		case !optedIn && st.InProgress():
			if err := r.optOut(ctx, t, *st); err != nil {
				return ctrl.Result{}, err
			}
		case optedIn:
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 && len(unreachable) == 0 {
		metrics.ForgetRelease(req.Namespace, req.Name)
		return ctrl.Result{}, nil
	}
	home, st := releaseStatus(ts)
	if st == nil {
		var res ctrl.Result
		if len(unreachable) > 0 {
			// No release to say it in: look again.
			res.RequeueAfter = degradedRetry
		}
		for _, t := range ts {
			err := r.idle(ctx, t)
			if errors.Is(err, errNotAdopted) {
				res.RequeueAfter = degradedRetry
				continue
			}
			if err != nil {
				return ctrl.Result{}, err
			}
		}
		return res, nil
	}
	if len(unreachable) > 0 {
		return r.degraded(ctx, ts, *st, errors.Join(unreachable...))
	}
	if len(ts) == 1 {
		if done, err := r.catchUpMidRelease(ctx, ts[0], *st); done || err != nil {
			return ctrl.Result{}, err
		}
	}
	action := api.Action("")
	for _, t := range ts {
		if a, _ := api.ActionFrom(t.d.Annotations); a != "" {
			action = a
			break
		}
	}
	return r.step(ctx, ts, home, *st, action)
}

// idle looks after a Deployment with no release in progress: it clears an
// action that cannot apply, catches an unheld version change and drops a
// finalizer left from a release.
func (r *Reconciler) idle(ctx context.Context, t target) error {
	if a, _ := api.ActionFrom(t.d.Annotations); a != "" {
		return r.ignoreAction(ctx, t, fmt.Sprintf("action %s ignored: no release is in progress", a))
	}
	st, _ := api.StatusFrom(t.d.Annotations)
	if done, err := r.catchUp(ctx, t, st); done || err != nil {
		return err
	}
	if st == nil {
		return nil
	}
	metrics.ObserveRelease(t.d.Namespace, t.d.Name, *st)
	if slices.Contains(t.d.Finalizers, api.Finalizer) {
		return r.persist(ctx, t, *st, Action{Done: true})
	}
	return nil
}

// step makes the next move of a release in progress: observe every
// cluster's part, decide (NextFleet), act, persist everywhere, tell.
func (r *Reconciler) step(ctx context.Context, ts []target, home *appsv1.Deployment, st api.Status, action api.Action) (ctrl.Result, error) {
	plan, err := api.ParsePlan(home.Annotations)
	if err != nil {
		return r.degraded(ctx, ts, st, err)
	}
	if err := r.contention(ctx, home, plan, st); err != nil {
		return r.degraded(ctx, ts, st, err)
	}
	router := r.router(home, plan)
	var split routes.Split
	if router != nil {
		if split, err = router.Observe(ctx); err != nil {
			return r.degraded(ctx, ts, st, err)
		}
	}
	obs := make([]MemberObservation, len(ts))
	for i, t := range ts {
		o, err := r.observe(ctx, t)
		if err != nil {
			return r.degraded(ctx, ts, st, fmt.Errorf("cluster %s: %w", t.Name, err))
		}
		o.Split, o.Action = split, action
		obs[i] = MemberObservation{Cluster: t.Name, Version: t.d.Spec.Template.Labels[api.VersionLabel(t.d.Annotations)], Observation: o}
	}
	next, act, moves := NextFleet(st, plan, obs, r.now())
	ctrl.LoggerFrom(ctx).V(1).Info("Decided", "phase", next.Phase, "step", next.CurrentStepIndex, "weight", next.CanaryWeight, "message", next.Message)
	if err := r.act(ctx, ts, router, act, moves); err != nil {
		return r.degraded(ctx, ts, st, err)
	}
	// A step starts once the previous step's move is made (its weight
	// written), so a pause lasts its full duration as users see it.
	if next.CurrentStepIndex != st.CurrentStepIndex && next.StepStartedAt != nil {
		next.StepStartedAt.Time = r.now()
	}
	next.Members = r.memberStatus(ts, obs, moves, st.SideBySide)
	for i, t := range ts {
		a := act
		a.Unpause = moves[i].Unpause
		if err := r.persist(ctx, t, next, a); err != nil {
			return ctrl.Result{}, err
		}
	}
	metrics.ObserveRelease(home.Namespace, home.Name, next)
	if n := next.CurrentStepIndex - st.CurrentStepIndex; n > 0 {
		metrics.StepsCompleted(home.Namespace, home.Name, int(n))
	}
	for _, t := range ts {
		r.record(t, act.Events...)
	}
	// A member cluster that stops answering sends no event: a release that
	// spans clusters looks again now and then, to say so.
	if next.InProgress() && len(r.clusters()) > 1 {
		act.RequeueAfter = minPositive(act.RequeueAfter, memberCheck)
	}
	res := ctrl.Result{RequeueAfter: act.RequeueAfter}
	if act.RequeueAfter > 0 {
		res.Priority = new(progressPriority)
	}
	return res, nil
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// observe reads a cluster's Deployment and canary Deployment.
func (r *Reconciler) observe(ctx context.Context, t target) (Observation, error) {
	d := t.d
	obs := Observation{
		Replicas:        ptrOr(d.Spec.Replicas, 1),
		StableAvailable: d.Status.AvailableReplicas,
		Paused:          d.Spec.Paused,
		Rolled:          rolledOut(d),
	}
	c := &appsv1.Deployment{}
	err := r.getCanary(ctx, t, types.NamespacedName{Namespace: d.Namespace, Name: CanaryName(d)}, c, true)
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
	return obs, nil
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

// act carries out a move: canaries first, then traffic, then removal.
func (r *Reconciler) act(ctx context.Context, ts []target, router routes.Router, act Action, moves []MemberMove) error {
	for i, t := range ts {
		if n := moves[i].CanaryReplicas; n != nil {
			if err := r.ensureCanary(ctx, t, *n); err != nil {
				return fmt.Errorf("cluster %s: %w", t.Name, err)
			}
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
			for _, t := range ts {
				r.record(t, Event{ReasonTrafficShifted, fmt.Sprintf("canary %s weight %d%%, stable %s weight %d%%", poolVersion(s.CanaryVersion), s.CanaryWeight, poolVersion(s.StableVersion), 100-s.CanaryWeight)})
			}
		}
	}
	if act.ScaleDown != "" {
		if err := r.scaleDown(ctx, ts[0].d, act.ScaleDown); err != nil {
			return err
		}
	}
	for i, t := range ts {
		if moves[i].DeleteCanary {
			if err := r.deleteCanary(ctx, t); err != nil {
				return fmt.Errorf("cluster %s: %w", t.Name, err)
			}
		}
	}
	return nil
}

func (r *Reconciler) ensureCanary(ctx context.Context, t target, replicas int32) error {
	want := desiredCanary(t.d, replicas)
	cur := &appsv1.Deployment{}
	err := r.getCanary(ctx, t, client.ObjectKeyFromObject(want), cur, false)
	if apierrors.IsNotFound(err) {
		if err := t.Client.Create(ctx, want); err != nil {
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
	if err := t.Client.Update(ctx, cur); err != nil {
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
// A member cluster's canary is read uncached: its cache may not have synced
// (a member added while unreachable), and a read from it would wait.
func (r *Reconciler) getCanary(ctx context.Context, t target, key types.NamespacedName, c *appsv1.Deployment, confirmReady bool) error {
	if t.Name != r.ClusterName {
		return t.Reader.Get(ctx, key, c)
	}
	err := t.Client.Get(ctx, key, c)
	if apierrors.IsNotFound(err) || (err == nil && confirmReady && rolledOut(c)) {
		err = t.Reader.Get(ctx, key, c)
	}
	return err
}

// scaleDown scales to zero, in every cluster, the Deployments of the old
// version of a side-by-side release: those of d's namespace whose pods carry
// d's selector labels with the version label set to version (helloworld-v1
// for helloworld-v2 with app=helloworld).
func (r *Reconciler) scaleDown(ctx context.Context, d *appsv1.Deployment, version string) error {
	key := api.VersionLabel(d.Annotations)
	sel := maps.Clone(d.Spec.Selector.MatchLabels)
	if sel == nil {
		sel = map[string]string{}
	}
	sel[key] = version
	for _, c := range r.clusters() {
		var list appsv1.DeploymentList
		if err := c.Reader.List(ctx, &list, client.InNamespace(d.Namespace)); err != nil {
			return fmt.Errorf("cluster %s: list deployments of %s: %w", c.Name, version, err)
		}
		for i := range list.Items {
			o := &list.Items[i]
			if !labels.SelectorFromSet(sel).Matches(labels.Set(o.Spec.Template.Labels)) || ptrOr(o.Spec.Replicas, 1) == 0 {
				continue
			}
			patch := []byte(`{"spec":{"replicas":0}}`)
			if err := c.Client.Patch(ctx, o, client.RawPatch(types.MergePatchType, patch)); err != nil {
				return fmt.Errorf("cluster %s: scale down %s: %w", c.Name, o.Name, err)
			}
			r.record(target{Cluster: c, d: o}, Event{ReasonScaledDown, fmt.Sprintf("scaled to zero: %s replaced %s side by side", d.Spec.Template.Labels[key], version)})
		}
	}
	return nil
}

func (r *Reconciler) deleteCanary(ctx context.Context, t target) error {
	c := &appsv1.Deployment{}
	c.Namespace, c.Name = t.d.Namespace, CanaryName(t.d)
	if err := t.Client.Delete(ctx, c, client.PropagationPolicy("Background")); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete canary deployment: %w", err)
	}
	return nil
}

// persist writes the status, the unpause and the finalizer's removal in one
// JSON patch that first tests the status annotation, the version label and
// the finalizers it read: an edit made meanwhile (a new version, say) is never
// overwritten, the patch fails and the release is reconciled again from the
// fresh object. Status writes of the Deployment controller do not conflict.
func (r *Reconciler) persist(ctx context.Context, t target, st api.Status, act Action) error {
	d := t.d
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
	if err := t.Client.Patch(ctx, d, client.RawPatch(types.JSONPatchType, data)); err != nil {
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
func (r *Reconciler) ignoreAction(ctx context.Context, t target, why string) error {
	ops := []patchOp{
		{Op: "test", Path: actionPointer, Value: t.d.Annotations[api.AnnotationAction]},
		{Op: "remove", Path: actionPointer},
	}
	data, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	if err := t.Client.Patch(ctx, t.d, client.RawPatch(types.JSONPatchType, data)); err != nil {
		return fmt.Errorf("clear action: %w", err)
	}
	r.record(t, Event{ReasonActionIgnored, why})
	return nil
}

// degraded records why a release cannot proceed, in every cluster that
// answers, and retries later. Errors other than a missing object, an
// invalid strategy or a cluster that does not answer are returned for
// backoff.
func (r *Reconciler) degraded(ctx context.Context, ts []target, st api.Status, cause error) (ctrl.Result, error) {
	if !errors.Is(cause, routes.ErrMissing) && !errors.Is(cause, api.ErrInvalidStrategy) && !errors.Is(cause, errUnreachable) && !errors.Is(cause, errContended) {
		return ctrl.Result{}, cause
	}
	msg := strings.ReplaceAll(cause.Error(), "\n", "; ")
	changed := st.Message != msg
	st.Message = msg
	// A rollback stays a rollback: Degraded would lose what to resume.
	if st.Phase != api.PhaseRollingBack {
		changed = changed || st.Phase != api.PhaseDegraded
		st.Phase = api.PhaseDegraded
	}
	for _, t := range ts {
		if err := r.persist(ctx, t, st, Action{}); err != nil {
			return ctrl.Result{}, err
		}
		if changed {
			r.record(t, Event{ReasonDegraded, msg})
		}
	}
	if len(ts) > 0 {
		metrics.ObserveRelease(ts[0].d.Namespace, ts[0].d.Name, st)
	}
	return ctrl.Result{RequeueAfter: degradedRetry}, nil
}

// finalize runs when a Deployment is deleted mid-release: all traffic back to
// stable (its pods are still there while the finalizer holds the
// Deployment), the canary removed, then the finalizer.
func (r *Reconciler) finalize(ctx context.Context, t target, st *api.Status) error {
	if !slices.Contains(t.d.Finalizers, api.Finalizer) {
		return nil
	}
	if err := r.drain(ctx, t, st); err != nil {
		return err
	}
	orig := t.d.DeepCopy()
	t.d.Finalizers = slices.DeleteFunc(t.d.Finalizers, func(f string) bool { return f == api.Finalizer })
	if err := t.Client.Patch(ctx, t.d, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("remove finalizer: %w", err)
	}
	return nil
}

// optOut ends a release whose Deployment no longer opts in (its label was
// removed or changed): traffic and header routes back to stable, the canary
// removed, and the native rollout resumes, as without vane.
func (r *Reconciler) optOut(ctx context.Context, t target, st api.Status) error {
	if err := r.drain(ctx, t, &st); err != nil {
		return err
	}
	// The template's version rolls out natively: it is the stable one now.
	version := t.d.Spec.Template.Labels[api.VersionLabel(t.d.Annotations)]
	next := api.Status{Phase: api.PhaseHealthy, StableVersion: version, Message: fmt.Sprintf("opted out during the release of %s: canary removed, native rollout resumed", st.CanaryVersion)}
	if err := r.persist(ctx, t, next, Action{Unpause: true, Done: true}); err != nil {
		return err
	}
	r.record(t, Event{ReasonOptedOut, next.Message})
	return nil
}

// drain sends a release's traffic back to stable (no canary weight, no
// header routes) and removes the canary, for a release that ends outside
// the step machine. Missing mesh objects are no obstacle.
func (r *Reconciler) drain(ctx context.Context, t target, st *api.Status) error {
	if plan, err := api.ParsePlan(t.d.Annotations); err == nil && st.InProgress() && plan.Routed() {
		router := r.router(t.d, plan)
		split, err := router.Observe(ctx)
		if err == nil && (split.CanaryWeight > 0 || len(split.HeaderRoutes) > 0) {
			split.CanaryWeight, split.HeaderRoutes = 0, nil
			_, err = router.Ensure(ctx, split)
		}
		if err != nil && !errors.Is(err, routes.ErrMissing) {
			return err
		}
	}
	if st.InProgress() && st.SideBySide {
		return nil // the Deployment is the canary: it is the user's
	}
	return r.deleteCanary(ctx, t)
}

// record records Events on d; ActionIgnored and RolloutDegraded are
// warnings.
func (r *Reconciler) record(t target, evs ...Event) {
	for _, e := range evs {
		kind := corev1.EventTypeNormal
		if e.Reason == ReasonActionIgnored || e.Reason == ReasonDegraded || e.Reason == ReasonCaughtUp {
			kind = corev1.EventTypeWarning
		}
		t.Recorder.Eventf(t.d, nil, kind, e.Reason, "Release", "%s", e.Message)
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
