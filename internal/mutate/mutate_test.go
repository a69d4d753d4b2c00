package mutate

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vane-io/vane/internal/api"
)

const strategy = `canary:
  trafficRouting:
    istio:
      virtualService: {name: provider, routes: [test-v1]}
      destinationRule: {name: dubbo-provider, stableSubsetName: stable, canarySubsetName: canary}
  steps:
  - setWeight: 5
  - pause: {duration: 10m}
`

// deploy is a small fluent builder for opted-in Deployments.
type deploy struct{ d *appsv1.Deployment }

func newDeploy(version string) deploy {
	return deploy{&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name: "dubbo3-provider", Namespace: "demo",
			Labels:      map[string]string{api.LabelCanary: api.LabelCanaryEnabled},
			Annotations: map[string]string{api.AnnotationStrategy: strategy},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "dubbo3-provider"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "dubbo3-provider", "version": version}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "provider:" + version}}},
			},
		},
	}}
}

func ptr[T any](v T) *T { return &v }

// batches is a strategy of replica batches, each followed by a manual gate.
func batches(replicas ...string) string {
	s := "steps:\n"
	for _, r := range replicas {
		s += "- setCanaryScale: {replicas: " + r + "}\n- pause: {}\n"
	}
	return s
}

func (b deploy) annotate(k, v string) deploy { b.d.Annotations[k] = v; return b }
func (b deploy) label(k, v string) deploy    { b.d.Labels[k] = v; return b }
func (b deploy) replicas(n int32) deploy     { b.d.Spec.Replicas = &n; return b }
func (b deploy) paused() deploy              { b.d.Spec.Paused = true; return b }
func (b deploy) status(s api.Status) deploy  { return b.annotate(api.AnnotationStatus, s.Encode()) }
func (b deploy) obj() *appsv1.Deployment     { return b.d.DeepCopy() }

var now = time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)

// apply applies the webhook's patch to obj exactly as the API server does.
func apply(t *testing.T, obj *appsv1.Deployment, ops any) *appsv1.Deployment {
	t.Helper()
	doc, _ := json.Marshal(obj)
	raw, _ := json.Marshal(ops)
	p, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		t.Fatalf("decode patch %s: %v", raw, err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		t.Fatalf("apply patch %s: %v", raw, err)
	}
	got := &appsv1.Deployment{}
	if err := json.Unmarshal(out, got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestDecide(t *testing.T) {
	started := &metav1.MicroTime{Time: now}
	inProgress := api.Status{Phase: api.PhasePaused, StableVersion: "v1", CanaryVersion: "v2", CurrentStepIndex: 1, StepCount: 2, CanaryWeight: 5}
	cases := map[string]struct {
		old, new   *appsv1.Deployment // old nil: CREATE
		wantPaused bool
		wantStatus *api.Status // nil: no status change expected
		wantErr    string
		wantNoop   bool
	}{
		"version change holds the rollout": {
			old: newDeploy("v1").obj(), new: newDeploy("v2").obj(),
			wantPaused: true,
			wantStatus: &api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", StepCount: 2, StepStartedAt: started, Message: "version v1 → v2: native rollout held, canary release started"},
		},
		"custom version label key": {
			old: newDeploy("v1").annotate(api.AnnotationVersionLabel, "app").obj(),
			new: func() *appsv1.Deployment {
				d := newDeploy("v1").annotate(api.AnnotationVersionLabel, "app").obj()
				d.Spec.Template.Labels["app"] = "x"
				return d
			}(),
			wantPaused: true,
			wantStatus: &api.Status{Phase: api.PhaseProgressing, StableVersion: "dubbo3-provider", CanaryVersion: "x", StepCount: 2, StepStartedAt: started, Message: "version dubbo3-provider → x: native rollout held, canary release started"},
		},
		"custom key ignores version label": {
			old:      newDeploy("v1").annotate(api.AnnotationVersionLabel, "track").obj(),
			new:      newDeploy("v2").annotate(api.AnnotationVersionLabel, "track").obj(),
			wantNoop: true,
		},
		"image change without version change passes": {
			old: newDeploy("v1").obj(),
			new: func() *appsv1.Deployment {
				d := newDeploy("v1").obj()
				d.Spec.Template.Spec.Containers[0].Image = "other"
				return d
			}(),
			wantNoop: true,
		},
		"not opted in passes even with a bad strategy": {
			old:      newDeploy("v1").label(api.LabelCanary, "no").obj(),
			new:      newDeploy("v2").label(api.LabelCanary, "no").annotate(api.AnnotationStrategy, "bad: [").obj(),
			wantNoop: true,
		},
		"controller's own status write passes": {
			old:      newDeploy("v2").paused().status(inProgress).obj(),
			new:      newDeploy("v2").paused().status(api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", CurrentStepIndex: 2, StepCount: 2}).obj(),
			wantNoop: true,
		},
		"controller's unpause when promoting passes": {
			old:      newDeploy("v2").paused().status(inProgress).obj(),
			new:      newDeploy("v2").status(api.Status{Phase: api.PhasePromoting, StableVersion: "v1", CanaryVersion: "v2", CurrentStepIndex: 2, StepCount: 2}).obj(),
			wantNoop: true,
		},
		"an apply that unpauses mid-release is held": {
			old:        newDeploy("v2").paused().status(inProgress).obj(),
			new:        newDeploy("v2").status(inProgress).obj(),
			wantPaused: true,
		},
		"new version mid-release keeps stable and weight": {
			old:        newDeploy("v2").paused().status(inProgress).obj(),
			new:        newDeploy("v3").paused().status(inProgress).obj(),
			wantPaused: true,
			wantStatus: &api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v3", StepCount: 2, CanaryWeight: 5, StepStartedAt: started, Message: "version v2 → v3 during a release from v1: canary restarts at step 0"},
		},
		"edit back to stable mid-release rolls back": {
			old:        newDeploy("v2").paused().status(inProgress).obj(),
			new:        newDeploy("v1").paused().status(inProgress).obj(),
			wantPaused: true,
			wantStatus: &api.Status{Phase: api.PhaseRollingBack, StableVersion: "v1", CanaryVersion: "v2", StepCount: 2, CanaryWeight: 5, StepStartedAt: started, Message: "version edited back to v1: rolling back"},
		},
		"after a healthy release the new stable is the old version": {
			old:        newDeploy("v2").status(api.Status{Phase: api.PhaseHealthy, StableVersion: "v2"}).obj(),
			new:        newDeploy("v3").status(api.Status{Phase: api.PhaseHealthy, StableVersion: "v2"}).obj(),
			wantPaused: true,
			wantStatus: &api.Status{Phase: api.PhaseProgressing, StableVersion: "v2", CanaryVersion: "v3", StepCount: 2, StepStartedAt: started, Message: "version v2 → v3: native rollout held, canary release started"},
		},
		"scaled to zero rolls natively": {
			old: newDeploy("v1").replicas(0).obj(), new: newDeploy("v2").replicas(0).obj(),
			wantNoop: true,
		},
		"bad strategy on create is denied": {
			new:     newDeploy("v1").annotate(api.AnnotationStrategy, "steps: [{setWeight: 500}]").obj(),
			wantErr: "annotation vane.io/strategy: steps[0].setWeight 500 is not allowed",
		},
		"a strategy without trafficRouting passes (a canary by replica count)": {
			new: newDeploy("v1").annotate(api.AnnotationStrategy, "steps: [{setWeight: 25}, {pause: {}}]").obj(), wantNoop: true,
		},
		"a batch within the Deployment's replicas passes": {
			new: newDeploy("v1").replicas(2).annotate(api.AnnotationStrategy, batches("1", `"50%"`)).obj(), wantNoop: true,
		},
		"a batch of more replicas than the Deployment has is denied on create": {
			new:     newDeploy("v1").replicas(2).annotate(api.AnnotationStrategy, batches("1", "3")).obj(),
			wantErr: `annotation vane.io/strategy: steps[2].setCanaryScale.replicas 3 is more than the Deployment's spec.replicas (2)`,
		},
		"a batch of 0% is denied": {
			new:     newDeploy("v1").annotate(api.AnnotationStrategy, batches(`"0%"`)).obj(),
			wantErr: `annotation vane.io/strategy: steps[0].setCanaryScale.replicas "0%" is not allowed`,
		},
		"a batch above 100% is denied": {
			old:     newDeploy("v1").obj(),
			new:     newDeploy("v1").annotate(api.AnnotationStrategy, batches(`"101%"`)).obj(),
			wantErr: `annotation vane.io/strategy: steps[0].setCanaryScale.replicas "101%" is not allowed`,
		},
		"a release that would run a batch larger than the Deployment is denied": {
			old:     newDeploy("v1").replicas(3).annotate(api.AnnotationStrategy, batches("2")).obj(),
			new:     newDeploy("v2").replicas(1).annotate(api.AnnotationStrategy, batches("2")).obj(),
			wantErr: `steps[0].setCanaryScale.replicas 2 is more than the Deployment's spec.replicas (1)`,
		},
		"a scale below a batch is never blocked": {
			old:      newDeploy("v1").replicas(3).annotate(api.AnnotationStrategy, batches("2")).obj(),
			new:      newDeploy("v1").replicas(1).annotate(api.AnnotationStrategy, batches("2")).obj(),
			wantNoop: true,
		},
		"missing strategy on create is denied": {
			new:     func() *appsv1.Deployment { d := newDeploy("v1").obj(); d.Annotations = nil; return d }(),
			wantErr: "annotation vane.io/strategy is missing",
		},
		"good strategy on create passes": {new: newDeploy("v1").obj(), wantNoop: true},
		"bad strategy edit is denied": {
			old:     newDeploy("v1").obj(),
			new:     newDeploy("v1").annotate(api.AnnotationStrategy, strings.Replace(strategy, "setWeight: 5", "setWeight: 120", 1)).obj(),
			wantErr: "steps[0].setWeight 120 is not allowed: must be an integer from 0 to 100",
		},
		"version change with a bad strategy is denied": {
			old:     newDeploy("v1").annotate(api.AnnotationStrategy, "x: 1").obj(),
			new:     newDeploy("v2").annotate(api.AnnotationStrategy, "x: 1").obj(),
			wantErr: `unknown field "x"`,
		},
		"old bad strategy does not block unrelated updates": {
			old:      newDeploy("v1").annotate(api.AnnotationStrategy, "x: 1").obj(),
			new:      newDeploy("v1").annotate(api.AnnotationStrategy, "x: 1").replicas(3).obj(),
			wantNoop: true,
		},
		"an action passes unchanged": {
			old:      newDeploy("v2").paused().status(inProgress).obj(),
			new:      newDeploy("v2").paused().status(inProgress).annotate(api.AnnotationAction, "promote").obj(),
			wantNoop: true,
		},
		"an unknown action is denied": {
			old:     newDeploy("v2").paused().status(inProgress).obj(),
			new:     newDeploy("v2").paused().status(inProgress).annotate(api.AnnotationAction, "resume").obj(),
			wantErr: `annotation vane.io/action: "resume" is not an action; use one of promote, promote-full, abort, retry`,
		},
		"an aborted release stays held": {
			old:        newDeploy("v2").paused().status(api.Status{Phase: api.PhaseAborted, StableVersion: "v1", CanaryVersion: "v2"}).obj(),
			new:        newDeploy("v2").status(api.Status{Phase: api.PhaseAborted, StableVersion: "v1", CanaryVersion: "v2"}).obj(),
			wantPaused: true,
		},
		"removing the version label is denied": {
			old: newDeploy("v1").obj(),
			new: func() *appsv1.Deployment {
				d := newDeploy("v1").obj()
				delete(d.Spec.Template.Labels, "version")
				return d
			}(),
			wantErr: `pod template label "version" is required`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ops, err := Decide(tc.old, tc.new, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantNoop {
				if len(ops) != 0 {
					t.Fatalf("want no patch, got %v", ops)
				}
				return
			}
			got := apply(t, tc.new, ops)
			if got.Spec.Paused != tc.wantPaused {
				t.Errorf("spec.paused = %v, want %v", got.Spec.Paused, tc.wantPaused)
			}
			// Only paused and the status annotation may change.
			want := tc.new.DeepCopy()
			want.Spec.Paused = tc.wantPaused
			if tc.wantStatus != nil {
				want.Annotations[api.AnnotationStatus] = tc.wantStatus.Encode()
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("patched object (-want,+got):\n%s", diff)
			}
		})
	}
}

// A server-side apply by a GitOps tool drops the fields its manager came to
// own when the webhook set them in its request (spec.paused, the status):
// during a release the webhook puts them back.
func TestDecideKeepsReleaseStateAgainstApplies(t *testing.T) {
	inProgress := api.Status{Phase: api.PhaseProgressing, StableVersion: "v1", CanaryVersion: "v2", CurrentStepIndex: 1, StepCount: 2, CanaryWeight: 5}
	old := newDeploy("v2").paused().status(inProgress).obj()
	applied := newDeploy("v2").obj() // the git manifest: no paused, no status
	ops, err := Decide(old, applied, now)
	if err != nil {
		t.Fatal(err)
	}
	got := apply(t, applied, ops)
	if !got.Spec.Paused || got.Annotations[api.AnnotationStatus] != inProgress.Encode() {
		t.Errorf("after the apply: paused=%v status=%q; want both kept", got.Spec.Paused, got.Annotations[api.AnnotationStatus])
	}
	// Once released, an apply without the status is the user's business.
	healthy := newDeploy("v2").status(api.Status{Phase: api.PhaseHealthy, StableVersion: "v2"}).obj()
	if ops, _ := Decide(healthy, newDeploy("v2").obj(), now); len(ops) != 0 {
		t.Errorf("no release in progress: want no patch, got %v", ops)
	}
}
