package canary

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/vane-io/vane/internal/api"
)

// release is an opted-in Deployment routed through VirtualService vs and
// DestinationRule dr, in the given phase.
func release(name, vs, dr string, phase api.Phase) *appsv1.Deployment {
	strategy := fmt.Sprintf(`canary:
  trafficRouting:
    istio:
      virtualService: {name: %s, routes: [primary]}
      destinationRule: {name: %s, stableSubsetName: stable, canarySubsetName: canary}
  steps:
  - setWeight: 10
`, vs, dr)
	st := api.Status{Phase: phase, StableVersion: "v1", CanaryVersion: "v2"}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{
		Namespace:   "demo",
		Name:        name,
		Labels:      map[string]string{api.LabelCanary: api.LabelCanaryEnabled},
		Annotations: map[string]string{api.AnnotationStrategy: strategy, api.AnnotationStatus: st.Encode()},
	}}
}

func TestReleasesRoutedBy(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	notOptedIn := release("plain", "provider", "provider", api.PhaseProgressing)
	notOptedIn.Labels = nil
	otherNamespace := release("elsewhere", "provider", "provider", api.PhaseProgressing)
	otherNamespace.Namespace = "other"
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithIndex(&appsv1.Deployment{}, routingIndex, routingKeys).
		WithObjects(
			release("a", "provider", "provider", api.PhaseProgressing),
			release("b", "provider", "b-rule", api.PhasePaused),
			release("c", "other", "provider", api.PhaseProgressing),
			release("done", "provider", "provider", api.PhaseHealthy),
			notOptedIn, otherNamespace,
		).Build()
	r := &Reconciler{Client: c}
	names := func(kind string, o client.Object) []string {
		var out []string
		for _, req := range r.releasesRoutedBy(kind)(context.Background(), o) {
			out = append(out, req.Name)
		}
		return out
	}
	meta := metav1.ObjectMeta{Namespace: "demo", Name: "provider"}
	for name, tc := range map[string]struct {
		kind string
		obj  client.Object
		want []string
	}{
		"a VirtualService wakes the releases in progress that name it":  {"VirtualService", &networkingv1.VirtualService{ObjectMeta: meta}, []string{"a", "b"}},
		"a DestinationRule wakes the releases in progress that name it": {"DestinationRule", &networkingv1.DestinationRule{ObjectMeta: meta}, []string{"a", "c"}},
		"an object no strategy names wakes none":                        {"VirtualService", &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "unrelated"}}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, names(tc.kind, tc.obj)); diff != "" {
				t.Errorf("releases woken (-want,+got):\n%s", diff)
			}
		})
	}
}

// canaryAt is d's canary with the given image and size, rolled out or not.
func canaryAt(d *appsv1.Deployment, image string, replicas int32, rolled bool) *appsv1.Deployment {
	o := d.DeepCopy()
	o.Spec.Template.Spec.Containers[0].Image = image
	c := desiredCanary(o, replicas)
	c.Generation = 2
	c.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: replicas}
	if rolled {
		c.Status = appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: replicas, UpdatedReplicas: replicas, AvailableReplicas: replicas}
	}
	return c
}

// TestObserveCanary covers reading the canary from the cache: what the
// cache lacks or shows as ready is read again from the API server, so a
// stale cache never hides a canary nor passes one for ready that is being
// rolled to another template.
func TestObserveCanary(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	d := release("provider", "provider", "provider", api.PhaseProgressing)
	d.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "provider"}}
	d.Spec.Template.Labels = map[string]string{"app": "provider", "version": "v2"}
	d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "app", Image: "app:2"}}
	for name, tc := range map[string]struct {
		cached, live *appsv1.Deployment
		member       bool
		want         *CanaryObservation
	}{
		"none anywhere":                        {want: nil},
		"created a moment ago, not yet cached": {live: canaryAt(d, "app:2", 1, false), want: &CanaryObservation{Replicas: 1}},
		"rolling out, as cached":               {cached: canaryAt(d, "app:2", 1, false), live: canaryAt(d, "app:2", 1, false), want: &CanaryObservation{Replicas: 1}},
		"ready, as cached":                     {cached: canaryAt(d, "app:2", 1, true), live: canaryAt(d, "app:2", 1, true), want: &CanaryObservation{Replicas: 1, Ready: true}},
		"cached ready, being rolled to another template meanwhile": {
			cached: canaryAt(d, "app:2", 1, true), live: canaryAt(d, "app:3", 1, false), want: &CanaryObservation{Replicas: 1},
		},
		"cached ready, resized meanwhile": {
			cached: canaryAt(d, "app:2", 1, true), live: canaryAt(d, "app:2", 2, false), want: &CanaryObservation{Replicas: 2},
		},
		"a member cluster's, read uncached": {
			cached: canaryAt(d, "app:2", 1, false), live: canaryAt(d, "app:2", 1, true), member: true, want: &CanaryObservation{Replicas: 1, Ready: true},
		},
	} {
		t.Run(name, func(t *testing.T) {
			holding := func(o *appsv1.Deployment) client.Client {
				b := fake.NewClientBuilder().WithScheme(scheme)
				if o != nil {
					b = b.WithObjects(o)
				}
				return b.Build()
			}
			r := &Reconciler{ClusterName: "primary"}
			t0 := target{Cluster: Cluster{Name: "primary", Client: holding(tc.cached), Reader: holding(tc.live)}, d: d}
			if tc.member {
				t0.Name = "b"
			}
			obs, err := r.observe(context.Background(), t0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, obs.Canary); diff != "" {
				t.Errorf("canary observed (-want,+got):\n%s", diff)
			}
		})
	}
}

// TestStepAdvanced covers which status writes wake a release ahead of the
// queue: those that start it or record a new step.
func TestStepAdvanced(t *testing.T) {
	at := func(phase api.Phase, step int32, message string) *appsv1.Deployment {
		d := release("provider", "provider", "provider", phase)
		st, _ := api.StatusFrom(d.Annotations)
		st.CurrentStepIndex, st.Message = step, message
		d.Annotations[api.AnnotationStatus] = st.Encode()
		return d
	}
	unadopted := release("provider", "provider", "provider", api.PhaseHealthy)
	delete(unadopted.Annotations, api.AnnotationStatus)
	for name, tc := range map[string]struct {
		old, new  *appsv1.Deployment
		wantWoken bool
	}{
		"a release starts":               {at(api.PhaseHealthy, 0, ""), at(api.PhaseProgressing, 0, ""), true},
		"a release starts, first status": {unadopted, at(api.PhaseProgressing, 0, ""), true},
		"a step is done":                 {at(api.PhaseProgressing, 0, ""), at(api.PhaseProgressing, 1, ""), true},
		"the last step is done":          {at(api.PhaseProgressing, 3, ""), at(api.PhasePromoting, 4, ""), true},
		"only the message changes":       {at(api.PhaseProgressing, 1, "a"), at(api.PhaseProgressing, 1, "b"), false},
		"the release ends":               {at(api.PhasePromoting, 4, ""), at(api.PhaseHealthy, 4, ""), false},
		"adopted":                        {unadopted, at(api.PhaseHealthy, 0, ""), false},
	} {
		t.Run(name, func(t *testing.T) {
			q := priorityqueue.New[reconcile.Request]("test")
			defer q.ShutDown()
			stepAdvanced(context.Background(), event.TypedUpdateEvent[client.Object]{ObjectOld: tc.old, ObjectNew: tc.new}, q)
			if !tc.wantWoken {
				if q.Len() != 0 {
					t.Errorf("woken, want not")
				}
				return
			}
			req, priority, _ := q.GetWithPriority()
			if req.Name != "provider" || priority != progressPriority {
				t.Errorf("woken %v at priority %d, want provider at %d", req, priority, progressPriority)
			}
		})
	}
}
