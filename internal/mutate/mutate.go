// Package mutate is vane's admission webhook for apps/v1 Deployments. On an
// UPDATE that changes the pod template's version label of an opted-in
// Deployment it holds the native rollout (spec.paused) and records the start
// of a release in the status annotation; it rejects bad strategies. It has no
// side effects: it only answers with a patch.
package mutate

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-openapi/jsonpointer"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	sigsjson "sigs.k8s.io/json"

	"github.com/vane-io/vane/internal/api"
	"github.com/vane-io/vane/internal/metrics"
)

// Path is where the webhook is served.
const Path = "/mutate-apps-v1-deployment"

// statusPointer is the JSON pointer of the status annotation.
var statusPointer = "/metadata/annotations/" + jsonpointer.Escape(api.AnnotationStatus)

// Handler answers admission reviews of Deployments.
type Handler struct {
	now func() time.Time
}

var _ admission.Handler = (*Handler)(nil)

// NewHandler returns a Handler.
func NewHandler() *Handler {
	return &Handler{now: time.Now}
}

// Handle implements admission.Handler.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	log := ctrl.LoggerFrom(ctx).WithName("admission").WithValues("deployment", req.Namespace+"/"+req.Name, "operation", req.Operation)
	newObj, err := decodeDeployment(req.Object.Raw)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	var oldObj *appsv1.Deployment
	if req.Operation == admissionv1.Update {
		if oldObj, err = decodeDeployment(req.OldObject.Raw); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
	}
	start := time.Now()
	ops, err := Decide(oldObj, newObj, h.now())
	switch {
	case err != nil:
		metrics.Admission(metrics.DecisionDeny, time.Since(start))
		log.V(1).Info("Denied", "reason", err.Error())
		return admission.Denied(err.Error())
	case len(ops) == 0:
		metrics.Admission(metrics.DecisionAllow, time.Since(start))
		return admission.Allowed("")
	case oldObj != nil && oldObj.Spec.Template.Labels[api.VersionLabel(newObj.Annotations)] != newObj.Spec.Template.Labels[api.VersionLabel(newObj.Annotations)]:
		metrics.Admission(metrics.DecisionHold, time.Since(start))
		log.Info("Native rollout held", "dryRun", req.DryRun != nil && *req.DryRun)
		return admission.Patched("canary release started", ops...)
	default:
		metrics.Admission(metrics.DecisionPatch, time.Since(start))
		log.Info("Kept paused during a release", "dryRun", req.DryRun != nil && *req.DryRun)
		return admission.Patched("kept paused during a release", ops...)
	}
}

// deploymentFields are the fields of a Deployment that Decide reads.
type deploymentFields struct {
	Metadata struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Replicas *int32 `json:"replicas"`
		Paused   bool   `json:"paused"`
		Template struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
		} `json:"template"`
	} `json:"spec"`
}

// decodeDeployment decodes the fields of a review's Deployment that Decide
// reads, and only those: decoding the old and the new Deployment whole
// (pod specs, status, managed fields) into typed objects was most of the
// handler's time and allocations, on every review it gets.
func decodeDeployment(raw []byte) (*appsv1.Deployment, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("the review holds no Deployment")
	}
	var f deploymentFields
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &f); err != nil {
		return nil, fmt.Errorf("decode deployment: %w", err)
	}
	d := &appsv1.Deployment{}
	d.Labels, d.Annotations = f.Metadata.Labels, f.Metadata.Annotations
	d.Spec.Replicas, d.Spec.Paused = f.Spec.Replicas, f.Spec.Paused
	d.Spec.Template.Labels = f.Spec.Template.Metadata.Labels
	return d, nil
}

// Decide returns the JSON patch for a Deployment admission: nil when it passes
// unchanged, an error (naming the annotation or label) when it must be
// denied. old is nil on CREATE.
func Decide(old, cur *appsv1.Deployment, now time.Time) ([]jsonpatch.Operation, error) {
	if cur.Labels[api.LabelCanary] != api.LabelCanaryEnabled {
		return nil, nil
	}
	if old == nil || strategyEdited(old, cur) {
		if _, err := parsePlan(cur); err != nil {
			return nil, err
		}
	}
	if old == nil {
		return nil, nil
	}
	if old.Annotations[api.AnnotationAction] != cur.Annotations[api.AnnotationAction] {
		if _, err := api.ActionFrom(cur.Annotations); err != nil {
			return nil, err
		}
	}
	key := api.VersionLabel(cur.Annotations)
	oldVersion, newVersion := old.Spec.Template.Labels[key], cur.Spec.Template.Labels[key]
	if oldVersion == newVersion {
		return holdDuringRelease(old, cur), nil
	}
	if newVersion == "" {
		return nil, fmt.Errorf("pod template label %q is required on a Deployment labelled %s=%s: vane starts a release when it changes; set it, or name another key in annotation %s", key, api.LabelCanary, api.LabelCanaryEnabled, api.AnnotationVersionLabel)
	}
	plan, err := parsePlan(cur)
	if err != nil {
		return nil, err
	}
	// Nothing runs to compare a canary with: let it roll out natively.
	if old.Spec.Replicas != nil && *old.Spec.Replicas == 0 {
		return nil, nil
	}
	prev, _ := api.StatusFrom(old.Annotations)
	st := api.StartStatus(prev, oldVersion, newVersion, int32(len(plan.Steps)), now)
	return holdPatch(cur, st), nil
}

// parsePlan parses d's strategy and checks its batches against d's size,
// which only the admitted object knows. A later scale is not checked: an
// HPA or kubectl scale must never be blocked by vane.
func parsePlan(d *appsv1.Deployment) (*api.Plan, error) {
	plan, err := plans.parse(d.Annotations)
	if err != nil {
		return nil, err
	}
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	return plan, plan.ValidateReplicas(replicas)
}

// maxPlans bounds the cache of parsed strategies: a few MiB at most.
const maxPlans = 4096

// plans caches parsed strategies by their text. Every review that starts a
// release parses its strategy, and parsing the YAML was two thirds of what
// such a review allocates; the same text comes back with every release of
// a Deployment. A Plan is never changed once parsed. Strategies that fail
// to parse are not kept (their denial is rare and parsed anew).
var plans = planCache{plans: map[string]*api.Plan{}}

type planCache struct {
	mu    sync.Mutex
	plans map[string]*api.Plan
}

func (c *planCache) parse(annotations map[string]string) (*api.Plan, error) {
	text := annotations[api.AnnotationStrategy]
	c.mu.Lock()
	plan, ok := c.plans[text]
	c.mu.Unlock()
	if ok {
		return plan, nil
	}
	plan, err := api.ParsePlan(annotations)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.plans) >= maxPlans {
		clear(c.plans)
	}
	c.plans[text] = plan
	return plan, nil
}

// strategyEdited reports whether an UPDATE changes what vane parses, so an
// unrelated update of a Deployment is never blocked by an old annotation.
func strategyEdited(old, cur *appsv1.Deployment) bool {
	return old.Annotations[api.AnnotationStrategy] != cur.Annotations[api.AnnotationStrategy] ||
		old.Annotations[api.AnnotationVersionLabel] != cur.Annotations[api.AnnotationVersionLabel] ||
		old.Labels[api.LabelCanary] != cur.Labels[api.LabelCanary]
}

// holdDuringRelease keeps a release's state while it walks its steps,
// whatever an apply sends: the native rollout stays paused (a GitOps sync
// with paused: false), and the status annotation stays (a server-side apply
// drops fields its manager came to own when this webhook set them in its
// request). Vane itself unpauses only once the status says Promoting.
func holdDuringRelease(old, cur *appsv1.Deployment) []jsonpatch.Operation {
	st, _ := api.StatusFrom(cur.Annotations)
	var ops []jsonpatch.Operation
	if _, kept := cur.Annotations[api.AnnotationStatus]; !kept {
		if st, _ = api.StatusFrom(old.Annotations); st.InProgress() {
			ops = append(ops, statusOp(cur, *st))
		}
	}
	// A side-by-side release's Deployment is the canary: it runs.
	if cur.Spec.Paused || !st.InProgress() || st.SideBySide {
		return ops
	}
	switch st.Phase {
	case api.PhaseProgressing, api.PhasePaused, api.PhaseDegraded, api.PhaseAborted:
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/paused", true))
	}
	return ops
}

// holdPatch pauses the Deployment and records st. The controller adds its
// finalizer on its first move.
func holdPatch(cur *appsv1.Deployment, st api.Status) []jsonpatch.Operation {
	var ops []jsonpatch.Operation
	if !cur.Spec.Paused {
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/paused", true))
	}
	return append(ops, statusOp(cur, st))
}

// statusOp sets the status annotation.
func statusOp(cur *appsv1.Deployment, st api.Status) jsonpatch.Operation {
	if cur.Annotations == nil {
		return jsonpatch.NewOperation("add", "/metadata/annotations", map[string]string{api.AnnotationStatus: st.Encode()})
	}
	return jsonpatch.NewOperation("add", statusPointer, st.Encode())
}
