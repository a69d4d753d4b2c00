package routes

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/vane-io/vane/internal/api"
)

// seedObjects returns a fake API server holding testdata's VirtualService
// and DestinationRule.
func seedObjects(t *testing.T) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := networkingv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	vs := &networkingv1.VirtualService{}
	load(t, "vs-provider.yaml", vs)
	dr := &networkingv1.DestinationRule{}
	load(t, "dr-provider.yaml", dr)
	vs.TypeMeta, dr.TypeMeta = metav1.TypeMeta{}, metav1.TypeMeta{}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(vs, dr).Build()
}

// TestEnsureFromObserved covers Ensure writing from the copies Observe
// read: subsets, weights and header routes land as asked, and an edit made
// by someone else in between is kept (the write conflicts and is redone on
// a fresh copy), not overwritten.
func TestEnsureFromObserved(t *testing.T) {
	routing := cfg
	routing.ManagedRoutes = []string{"lane-v2"}
	want := Split{StableVersion: "v1", CanaryVersion: "v2", CanaryWeight: 20, HeaderRoutes: []api.HeaderRoute{
		{Name: "lane-v2", Match: []api.HeaderMatch{{Name: "lane", Exact: "v2"}}},
	}}
	for name, tc := range map[string]struct {
		meanwhile func(context.Context, client.Client) error
		// kept reports whether the edit made in between is still there.
		kept func(*networkingv1.VirtualService, *networkingv1.DestinationRule) bool
	}{
		"nothing changes in between": {},
		"the VirtualService is edited in between": {
			meanwhile: func(ctx context.Context, c client.Client) error {
				vs := &networkingv1.VirtualService{}
				if err := c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "provider"}, vs); err != nil {
					return err
				}
				vs.Spec.Http[1].Timeout = durationpb.New(7 * time.Second)
				return c.Update(ctx, vs)
			},
			// test-v1 moved down by one: the header route went before it.
			kept: func(vs *networkingv1.VirtualService, _ *networkingv1.DestinationRule) bool {
				return vs.Spec.Http[2].GetName() == "test-v1" && vs.Spec.Http[2].GetTimeout().AsDuration() == 7*time.Second
			},
		},
		"the DestinationRule is edited in between": {
			meanwhile: func(ctx context.Context, c client.Client) error {
				dr := &networkingv1.DestinationRule{}
				if err := c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "dubbo-provider"}, dr); err != nil {
					return err
				}
				dr.Spec.Subsets[1].Labels = map[string]string{"app": "dubbo3-provider"}
				return c.Update(ctx, dr)
			},
			kept: func(_ *networkingv1.VirtualService, dr *networkingv1.DestinationRule) bool {
				return dr.Spec.Subsets[1].GetLabels()["app"] == "dubbo3-provider"
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			c := seedObjects(t)
			r := NewIstio(c, c, "demo", "version", routing)
			if _, err := r.Observe(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.meanwhile != nil {
				if err := tc.meanwhile(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			wrote, err := r.Ensure(ctx, want)
			if err != nil || !wrote {
				t.Fatalf("Ensure = %v, %v; want a write", wrote, err)
			}
			got, err := NewIstio(c, c, "demo", "version", routing).Observe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("split after Ensure (-want,+got):\n%s", diff)
			}
			vs := &networkingv1.VirtualService{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "provider"}, vs); err != nil {
				t.Fatal(err)
			}
			dr := &networkingv1.DestinationRule{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "dubbo-provider"}, dr); err != nil {
				t.Fatal(err)
			}
			if tc.kept != nil && !tc.kept(vs, dr) {
				t.Errorf("the edit made in between was overwritten:\nhttp %v\nsubsets %v", vs.Spec.Http, dr.Spec.Subsets)
			}
			if wrote, err := r.Ensure(ctx, want); err != nil || wrote {
				t.Errorf("Ensure again = %v, %v; want no write", wrote, err)
			}
		})
	}
}
