package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/certs"
)

func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }

func TestNodesReady(t *testing.T) {
	c := framework.Current(t)
	framework.WaitFor(t, 30*time.Second, "2 Ready kwok nodes", func(ctx context.Context) (bool, error) {
		var nodes corev1.NodeList
		if err := c.Client.List(ctx, &nodes, client.MatchingLabels{"type": "kwok"}); err != nil {
			return false, err
		}
		ready := 0
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready >= 2, nil
	})
}

func newDeployment(ns, name, image string, replicas int32, lbls map[string]string) *appsv1.Deployment {
	sel := map[string]string{"app": name}
	podLabels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "app", Image: image}},
				},
			},
		},
	}
}

// rolledOut reports whether every replica of the current generation is
// updated and available.
func rolledOut(d *appsv1.Deployment) bool {
	want := ptr.Deref(d.Spec.Replicas, 1)
	available := false
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
			available = true
		}
	}
	return available &&
		d.Status.ObservedGeneration == d.Generation &&
		d.Status.Replicas == want &&
		d.Status.UpdatedReplicas == want &&
		d.Status.ReadyReplicas == want &&
		d.Status.AvailableReplicas == want
}

func waitRolledOut(t *testing.T, c *framework.Cluster, key client.ObjectKey) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	framework.WaitFor(t, 60*time.Second, "deployment "+key.String()+" to roll out", func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, key, &d); err != nil {
			return false, err
		}
		return rolledOut(&d), nil
	})
	return &d
}

func TestDeploymentRollingUpdate(t *testing.T) {
	c := framework.Current(t)
	ns := c.Namespace(t)
	ctx := context.Background()

	d := newDeployment(ns, "web", "example.invalid/web:1", 3, nil)
	if err := c.Client.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(d)
	d = waitRolledOut(t, c, key)
	t.Logf("available: replicas=%d available=%d", d.Status.Replicas, d.Status.AvailableReplicas)

	patch := client.MergeFrom(d.DeepCopy())
	d.Spec.Template.Spec.Containers[0].Image = "example.invalid/web:2"
	if err := c.Client.Patch(ctx, d, patch); err != nil {
		t.Fatal(err)
	}
	d = waitRolledOut(t, c, key)
	if d.Generation < 2 {
		t.Fatalf("generation = %d after the image change, want >= 2", d.Generation)
	}

	// Every pod left runs the new image (the old ReplicaSet's are gone).
	framework.WaitFor(t, 60*time.Second, "old pods to go", func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		if err := c.Client.List(ctx, &pods, client.InNamespace(ns),
			client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(map[string]string{"app": "web"})}); err != nil {
			return false, err
		}
		if len(pods.Items) != 3 {
			return false, nil
		}
		for _, p := range pods.Items {
			if p.Spec.Containers[0].Image != "example.invalid/web:2" || p.Spec.NodeName == "" {
				return false, nil
			}
		}
		return true, nil
	})
}

var virtualServiceGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}

func TestVirtualServiceSchemaValidation(t *testing.T) {
	c := framework.Current(t)
	ns := c.Namespace(t)
	ctx := context.Background()

	// A well-formed one is accepted: the CRD is installed and served.
	good := &istionetworkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "good"},
	}
	good.Spec.Hosts = []string{"reviews"}
	good.Spec.Http = []*networkingv1alpha3.HTTPRoute{{
		Route: []*networkingv1alpha3.HTTPRouteDestination{
			{Destination: &networkingv1alpha3.Destination{Host: "reviews", Subset: "v1"}, Weight: 50},
			{Destination: &networkingv1alpha3.Destination{Host: "reviews", Subset: "v2"}, Weight: 50},
		},
	}}
	if err := c.Client.Create(ctx, good); err != nil {
		t.Fatalf("creating a valid VirtualService: %v", err)
	}

	// weight as a string violates the CRD's structural schema.
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "VirtualService",
		"metadata":   map[string]any{"name": "bad", "namespace": ns},
		"spec": map[string]any{
			"hosts": []any{"reviews"},
			"http": []any{map[string]any{
				"route": []any{map[string]any{
					"destination": map[string]any{"host": "reviews"},
					"weight":      "50",
				}},
			}},
		},
	}}
	_, err := c.Dynamic.Resource(virtualServiceGVR).Namespace(ns).Create(ctx, bad, metav1.CreateOptions{})
	if err == nil {
		t.Fatal("a VirtualService with weight: \"50\" (a string) was accepted")
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("got %v (reason %q), want an Invalid error", err, apierrors.ReasonForError(err))
	}
	if !strings.Contains(err.Error(), "weight") {
		t.Fatalf("error does not mention the weight field: %v", err)
	}
	t.Logf("rejected as expected: %v", err)
}

// webhookServer is an HTTPS admission webhook on 127.0.0.1 that adds an
// annotation to every object it is asked about.
type webhookServer struct {
	URL    string
	CAPEM  []byte
	mu     sync.Mutex
	seen   []admissionv1.AdmissionRequest
	server *http.Server
}

const mutatedAnnotation = "vane.io/e2e-mutated"

func startWebhookServer(t *testing.T) *webhookServer {
	t.Helper()
	caPEM, certPEM, keyPEM := selfSignedServing(t)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ws := &webhookServer{URL: "https://" + l.Addr().String() + "/mutate", CAPEM: caPEM}
	mux := http.NewServeMux()
	mux.HandleFunc("/mutate", ws.mutate)
	ws.server = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = ws.server.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = ws.server.Close() })
	return ws
}

func (ws *webhookServer) mutate(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("bad AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	ws.mu.Lock()
	ws.seen = append(ws.seen, *review.Request)
	ws.mu.Unlock()

	var obj metav1.PartialObjectMetadata
	_ = json.Unmarshal(review.Request.Object.Raw, &obj)
	var ops []map[string]any
	if obj.Annotations == nil {
		ops = append(ops, map[string]any{"op": "add", "path": "/metadata/annotations", "value": map[string]string{}})
	}
	ops = append(ops, map[string]any{
		"op":    "add",
		"path":  "/metadata/annotations/" + strings.ReplaceAll(mutatedAnnotation, "/", "~1"),
		"value": "true",
	})
	patch, _ := json.Marshal(ops)
	pt := admissionv1.PatchTypeJSONPatch
	review.Response = &admissionv1.AdmissionResponse{
		UID:       review.Request.UID,
		Allowed:   true,
		Patch:     patch,
		PatchType: &pt,
	}
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}

func (ws *webhookServer) requests() []admissionv1.AdmissionRequest {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return append([]admissionv1.AdmissionRequest(nil), ws.seen...)
}

// selfSignedServing makes a CA and a serving certificate for IP 127.0.0.1,
// with vane's own certificate code.
func selfSignedServing(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	b, _, err := certs.Renew(certs.Bundle{}, []string{"127.0.0.1"}, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return b.CACert, b.Cert, b.Key
}

func TestMutatingWebhookOnDeploymentUpdate(t *testing.T) {
	c := framework.Current(t)
	ns := c.Namespace(t)
	ctx := context.Background()
	ws := startWebhookServer(t)

	// Only objects carrying this label (unique to this test run) are sent to
	// the webhook, so other tests and controllers are unaffected.
	selectorValue := ns
	d := newDeployment(ns, "hooked", "example.invalid/hooked:1", 1, map[string]string{"vane.io/e2e-webhook": selectorValue})
	if err := c.Client.Create(ctx, d); err != nil {
		t.Fatal(err)
	}

	name := "vane-e2e-" + ns
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "mutate.e2e.vane.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL:      ptr.To(ws.URL),
				CABundle: ws.CAPEM,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{"apps"},
					APIVersions: []string{"v1"},
					Resources:   []string{"deployments"},
					Scope:       ptr.To(admissionregistrationv1.NamespacedScope),
				},
			}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"vane.io/e2e-webhook": selectorValue}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To(int32(10)),
		}},
	}
	if err := c.Client.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Client.Delete(context.Background(), cfg); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting MutatingWebhookConfiguration %s: %v", name, err)
		}
	})

	// The API server picks the configuration up asynchronously: update until
	// the stored object carries the patched annotation.
	key := client.ObjectKeyFromObject(d)
	i := 0
	framework.WaitFor(t, 30*time.Second, "the webhook's annotation on the stored Deployment", func(ctx context.Context) (bool, error) {
		var cur appsv1.Deployment
		if err := c.Client.Get(ctx, key, &cur); err != nil {
			return false, err
		}
		if cur.Annotations[mutatedAnnotation] == "true" {
			return true, nil
		}
		i++
		patch := client.MergeFrom(cur.DeepCopy())
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations["vane.io/e2e-touch"] = fmt.Sprint(i)
		if err := c.Client.Patch(ctx, &cur, patch); err != nil && !apierrors.IsConflict(err) {
			return false, err
		}
		return cur.Annotations[mutatedAnnotation] == "true", nil
	})

	var sawUpdate bool
	for _, r := range ws.requests() {
		if r.Operation == admissionv1.Update && r.Kind.Kind == "Deployment" && r.Namespace == ns && r.Name == "hooked" {
			sawUpdate = true
		}
		if r.Namespace != ns {
			t.Errorf("webhook saw %s %s/%s, outside the test's objectSelector", r.Operation, r.Namespace, r.Name)
		}
	}
	if !sawUpdate {
		t.Fatalf("the webhook server saw no UPDATE of deployment %s/hooked; it saw %d requests", ns, len(ws.requests()))
	}
}
