package canary

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

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
