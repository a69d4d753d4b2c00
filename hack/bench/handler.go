package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"runtime"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/vane-io/vane/internal/mutate"
)

// reviewOf is the admission request the API server sends for an UPDATE of
// old to cur.
func reviewOf(old, cur *appsv1.Deployment) (admission.Request, error) {
	oldRaw, err := json.Marshal(old)
	if err != nil {
		return admission.Request{}, err
	}
	curRaw, err := json.Marshal(cur)
	if err != nil {
		return admission.Request{}, err
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       types.UID("00000000-0000-0000-0000-000000000001"),
		Kind:      metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"},
		Resource:  metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"},
		Name:      cur.Name,
		Namespace: cur.Namespace,
		Operation: admissionv1.Update,
		Object:    k8sruntime.RawExtension{Raw: curRaw},
		OldObject: k8sruntime.RawExtension{Raw: oldRaw},
	}}, nil
}

// handlerCase is one review the handler is measured on.
type handlerCase struct {
	name string
	req  admission.Request
	// patched is whether the handler must answer with a patch.
	patched bool
}

// handlerCases are the cluster load's two kinds of review, on the same
// Deployment the admission load edits: a version edit (held: a patch) and,
// as the baseline, a review the handler lets pass unchanged (a replicas
// edit, had matchConditions not skipped it).
func handlerCases() ([]handlerCase, error) {
	steps := []step{setWeight(10), pauseFor(20 * time.Second), setWeight(50), pauseFor(20 * time.Second)}
	old := deployment("bench", "load-0", 1, true, steps)
	old.Generation, old.ResourceVersion, old.UID = 7, "12345", "0c6f6a52-1c52-4d38-9d0d-5b3c1b0c1e7a"
	version := old.DeepCopy()
	version.Spec.Template.Labels["version"] = "v2"
	scale := old.DeepCopy()
	scale.Spec.Replicas = ptr[int32](3)
	var out []handlerCase
	for _, c := range []struct {
		name    string
		cur     *appsv1.Deployment
		patched bool
	}{{"version edit (hold)", version, true}, {"replicas edit (allow)", scale, false}} {
		req, err := reviewOf(old, c.cur)
		if err != nil {
			return nil, err
		}
		out = append(out, handlerCase{c.name, req, c.patched})
	}
	return out, nil
}

// newHandler is mutate's Handler as vane serves it, logging through zap
// to nowhere so log encoding is paid as in production.
func newHandler() (*mutate.Handler, context.Context) {
	ctx := log.IntoContext(context.Background(), zap.New(zap.WriteTo(io.Discard)))
	return mutate.NewHandler(), ctx
}

// handlerResult is the in-process cost of one review.
type handlerResult struct {
	lat sample
	// mean time, bytes and allocations per call, as go test -benchmem
	// reports them.
	nsPerOp, bytesPerOp, allocsPerOp int64
}

// measureHandler calls the handler n times on each case (after a warm-up),
// timing every call, and counts the allocations.
func measureHandler(n int) (map[string]handlerResult, []handlerCase, error) {
	cases, err := handlerCases()
	if err != nil {
		return nil, nil, err
	}
	h, ctx := newHandler()
	out := map[string]handlerResult{}
	for _, c := range cases {
		if resp := h.Handle(ctx, c.req); !resp.Allowed || (len(resp.Patches) > 0) != c.patched {
			return nil, nil, fmt.Errorf("handler on %s: allowed=%v, %d patches", c.name, resp.Allowed, len(resp.Patches))
		}
		for range n / 10 {
			h.Handle(ctx, c.req)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		lat := make(sample, n)
		var total time.Duration
		for i := range n {
			t0 := time.Now()
			h.Handle(ctx, c.req)
			lat[i] = time.Since(t0)
			total += lat[i]
		}
		runtime.ReadMemStats(&after)
		out[c.name] = handlerResult{
			lat:         lat,
			nsPerOp:     int64(total) / int64(n),
			bytesPerOp:  int64(after.TotalAlloc-before.TotalAlloc) / int64(n),
			allocsPerOp: int64(after.Mallocs-before.Mallocs) / int64(n),
		}
	}
	return out, cases, nil
}

func (b *bench) handler() error {
	results, cases, err := measureHandler(b.cfg.HandlerCalls)
	if err != nil {
		return err
	}
	hold, allow := results[cases[0].name], results[cases[1].name]
	q, _ := ratio(hold.lat.pct(99), allow.lat.pct(99), 1e9)
	b.report.add(row{
		figure:   "handler alone, in-process: p50 / p99, " + cases[0].name,
		value:    fmt.Sprintf("%s / %s (n=%d; %d ns/op, %d B/op, %d allocs/op)", dur(hold.lat.pct(50)), dur(hold.lat.pct(99)), len(hold.lat), hold.nsPerOp, hold.bytesPerOp, hold.allocsPerOp),
		baseline: fmt.Sprintf("%s / %s %s (%d allocs/op)", dur(allow.lat.pct(50)), dur(allow.lat.pct(99)), cases[1].name, allow.allocsPerOp),
		ratio:    q,
		target:   "p99 < 1 ms",
		met:      within(hold.lat.pct(99), time.Millisecond-1),
	})
	served, err := measureServed(cases[0].req, b.cfg.HandlerCalls)
	if err != nil {
		return err
	}
	q, _ = ratio(served.pct(99), hold.lat.pct(99), 1e9)
	b.report.add(row{
		figure:   "webhook over HTTPS (HTTP/2, TLS), in-process, one call at a time: p50 / p99, " + cases[0].name,
		value:    served.p50p99(),
		baseline: "handler alone " + dur(hold.lat.pct(50)) + " / " + dur(hold.lat.pct(99)),
		ratio:    q,
	})
	return nil
}

// measureServed serves the handler as vane does (controller-runtime's
// admission webhook behind a TLS server that speaks HTTP/2, as the API
// server calls it) and times n reviews sent one after another from an
// HTTP/2 client in the same process: what vane adds to a call, without
// the cluster.
func measureServed(req admission.Request, n int) (sample, error) {
	h, ctx := newHandler()
	wh := &admission.Webhook{Handler: h, LogConstructor: func(logr.Logger, *admission.Request) logr.Logger { return log.FromContext(ctx) }}
	srv := httptest.NewUnstartedServer(wh)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req.AdmissionRequest,
	})
	if err != nil {
		return nil, err
	}
	client := srv.Client()
	call := func() error {
		resp, err := client.Post(srv.URL+mutate.Path, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
			return err
		}
		if review.Response == nil || !review.Response.Allowed || len(review.Response.Patch) == 0 {
			return fmt.Errorf("webhook over HTTPS: no patch in %+v", review.Response)
		}
		return nil
	}
	for range n / 10 {
		if err := call(); err != nil {
			return nil, err
		}
	}
	lat := make(sample, 0, n)
	for range n {
		t0 := time.Now()
		if err := call(); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}
