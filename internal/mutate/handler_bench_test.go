package mutate

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// review is the admission request the API server sends for an UPDATE of
// old to cur.
func review(b testing.TB, old, cur *appsv1.Deployment) admission.Request {
	b.Helper()
	oldRaw, err := json.Marshal(old)
	if err != nil {
		b.Fatal(err)
	}
	curRaw, err := json.Marshal(cur)
	if err != nil {
		b.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "00000000-0000-0000-0000-000000000001",
		Kind:      metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"},
		Resource:  metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"},
		Name:      cur.Name,
		Namespace: cur.Namespace,
		Operation: admissionv1.Update,
		Object:    runtime.RawExtension{Raw: curRaw},
		OldObject: runtime.RawExtension{Raw: oldRaw},
	}}
}

// BenchmarkHandler measures Handle on the reviews the webhook gets: a
// version edit it holds (a patch), and an edit it lets pass (a scale,
// had matchConditions not skipped it). Besides ns/op it reports the p50
// and p99 of the individual calls. Logs go through zap to nowhere, so
// their encoding is paid as in production.
//
//	go test -run '^$' -bench Handler -benchmem ./internal/mutate
func BenchmarkHandler(b *testing.B) {
	h := NewHandler()
	ctx := log.IntoContext(context.Background(), zap.New(zap.WriteTo(io.Discard)))
	old := newDeploy("v1").replicas(1).obj()
	old.Generation, old.ResourceVersion, old.UID = 7, "12345", "0c6f6a52-1c52-4d38-9d0d-5b3c1b0c1e7a"
	for _, c := range []struct {
		name    string
		cur     *appsv1.Deployment
		patched bool
	}{
		{"hold", newDeploy("v2").replicas(1).obj(), true},
		{"allow", newDeploy("v1").replicas(3).obj(), false},
	} {
		b.Run(c.name, func(b *testing.B) {
			req := review(b, old, c.cur)
			if resp := h.Handle(ctx, req); !resp.Allowed || (len(resp.Patches) > 0) != c.patched {
				b.Fatalf("allowed=%v, %d patches, want patched=%v", resp.Allowed, len(resp.Patches), c.patched)
			}
			b.ReportAllocs()
			var lat []time.Duration
			for b.Loop() {
				t0 := time.Now()
				h.Handle(ctx, req)
				lat = append(lat, time.Since(t0))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[(len(lat)*99+99)/100-1].Nanoseconds()), "p99-ns")
		})
	}
}
