package mutate

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/vane-io/vane/internal/api"
)

// TestHandleDecodesWhatDecideReads checks that Handle, which decodes only
// the fields Decide reads, answers every kind of review exactly as Decide
// does on the whole Deployments.
func TestHandleDecodesWhatDecideReads(t *testing.T) {
	inRelease := api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: 2}
	h := &Handler{now: func() time.Time { return now }}
	for name, tc := range map[string]struct{ old, cur *appsv1.Deployment }{
		"version edit: held":            {newDeploy("v1").obj(), newDeploy("v2").obj()},
		"scale: passes":                 {newDeploy("v1").obj(), newDeploy("v1").replicas(5).obj()},
		"scaled to zero: rolls out":     {newDeploy("v1").replicas(0).obj(), newDeploy("v2").replicas(0).obj()},
		"bad strategy: denied":          {newDeploy("v1").obj(), newDeploy("v2").annotate(api.AnnotationStrategy, "steps:\n- setWeight: 120\n").obj()},
		"batch above replicas: denied":  {newDeploy("v1").obj(), newDeploy("v1").annotate(api.AnnotationStrategy, batches("3")).obj()},
		"unpaused mid-release: re-held": {newDeploy("v2").paused().status(inRelease).obj(), newDeploy("v2").status(inRelease).obj()},
		"status dropped mid-release":    {newDeploy("v2").paused().status(inRelease).obj(), newDeploy("v2").paused().obj()},
		"other version label key":       {newDeploy("v1").annotate(api.AnnotationVersionLabel, "app").obj(), newDeploy("v2").annotate(api.AnnotationVersionLabel, "app").obj()},
		"not opted in":                  {newDeploy("v1").label(api.LabelCanary, "off").obj(), newDeploy("v2").label(api.LabelCanary, "off").obj()},
		"unknown action: denied":        {newDeploy("v2").paused().status(inRelease).obj(), newDeploy("v2").paused().status(inRelease).annotate(api.AnnotationAction, "launch").obj()},
		"create with a bad strategy":    {nil, newDeploy("v1").annotate(api.AnnotationStrategy, "steps: [{analysis: {}}]").obj()},
	} {
		t.Run(name, func(t *testing.T) {
			req := review(t, orEmpty(tc.old), tc.cur)
			if tc.old == nil {
				req.Operation, req.OldObject.Raw = admissionv1.Create, nil
			}
			ops, err := Decide(tc.old, tc.cur, now)
			resp := h.Handle(context.Background(), req)
			if resp.Allowed != (err == nil) {
				t.Fatalf("allowed = %v, Decide's error %v", resp.Allowed, err)
			}
			if err != nil {
				if got := resp.Result.Message; got != err.Error() {
					t.Errorf("denial %q, want %q", got, err.Error())
				}
				return
			}
			if len(ops) == 0 {
				ops = nil
			}
			if diff := cmp.Diff(ops, resp.Patches); diff != "" {
				t.Errorf("patch (-Decide,+Handle):\n%s", diff)
			}
		})
	}
}

func orEmpty(d *appsv1.Deployment) *appsv1.Deployment {
	if d == nil {
		return &appsv1.Deployment{}
	}
	return d
}

// TestPlanCache covers the parsed strategies kept by their text: a release
// starts with the steps of its own strategy, whatever was parsed before,
// and the cache stays bounded.
func TestPlanCache(t *testing.T) {
	stepCount := func(steps string) int32 {
		t.Helper()
		cur := newDeploy("v2").annotate(api.AnnotationStrategy, steps).obj()
		ops, err := Decide(newDeploy("v1").obj(), cur, now)
		if err != nil {
			t.Fatal(err)
		}
		st, err := api.StatusFrom(apply(t, cur, ops).Annotations)
		if err != nil || st == nil {
			t.Fatalf("status after hold: %v, %v", st, err)
		}
		return st.StepCount
	}
	for range 2 {
		if n := stepCount("steps:\n- setWeight: 5\n"); n != 1 {
			t.Errorf("1-step strategy started with %d steps", n)
		}
		if n := stepCount("steps:\n- setWeight: 5\n- pause: {}\n- setWeight: 50\n"); n != 3 {
			t.Errorf("3-step strategy started with %d steps", n)
		}
	}
	for i := range maxPlans + 10 {
		if _, err := plans.parse(map[string]string{api.AnnotationStrategy: fmt.Sprintf("steps:\n- setWeight: %d\n", i%100)}); err != nil {
			t.Fatal(err)
		}
		if _, err := plans.parse(map[string]string{api.AnnotationStrategy: fmt.Sprintf("# %d\nsteps: [{pause: {}}]\n", i)}); err != nil {
			t.Fatal(err)
		}
	}
	plans.mu.Lock()
	defer plans.mu.Unlock()
	if n := len(plans.plans); n > maxPlans {
		t.Errorf("%d strategies cached, want at most %d", n, maxPlans)
	}
}
