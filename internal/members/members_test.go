package members

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
)

// kubeconfig points at an address nothing listens on: the members' caches
// never sync, which the registry does not wait for.
func kubeconfig(server string) []byte {
	return []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "` + server + `"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`)
}

func secret(name string, age time.Duration, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "vane-system", Labels: map[string]string{LabelMultiCluster: "true"},
			CreationTimestamp: metav1.NewTime(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC).Add(age))},
		Data: data,
	}
}

func TestRegistry(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		secret("first", 0, map[string][]byte{"b": kubeconfig("https://127.0.0.1:1"), "c": kubeconfig("https://127.0.0.1:2"), "primary": kubeconfig("https://127.0.0.1:5")}),
		secret("second", time.Hour, map[string][]byte{"c": kubeconfig("https://127.0.0.1:3"), "d": []byte("not a kubeconfig")}),
	).Build()
	var watched []string
	changes := 0
	r := &Registry{Namespace: "vane-system", Self: "primary", Scheme: scheme, client: c, started: make(chan struct{}), running: map[string]*member{},
		Watch:   func(name string, _ cluster.Cluster) error { watched = append(watched, name); return nil },
		Changed: func(context.Context) { changes++ },
	}
	go func() { _ = r.Start(ctx) }()
	reconcile := func() {
		t.Helper()
		if _, err := r.Reconcile(ctx, ctrl.Request{}); err != nil {
			t.Fatal(err)
		}
	}
	names := func() []string {
		var out []string
		for _, m := range r.Clusters() {
			out = append(out, m.Name)
		}
		return out
	}
	server := func(name string) string {
		r.mu.RLock()
		defer r.mu.RUnlock()
		return r.running[name].c.GetConfig().Host
	}

	reconcile()
	// d's kubeconfig is bad: left out, the others run; c stays with the
	// older Secret that named it first; vane's own cluster is no member.
	if got := names(); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("members %v, want [b c]", got)
	}
	if server("c") != "https://127.0.0.1:2" {
		t.Errorf("c runs against %s, want the first Secret's", server("c"))
	}
	if !slices.Equal(watched, []string{"b", "c"}) || changes != 1 {
		t.Errorf("watched %v after %d changes, want [b c] after 1", watched, changes)
	}

	// Nothing changed: nothing restarts.
	reconcile()
	if changes != 1 {
		t.Errorf("a reconcile with the same Secrets changed the members")
	}

	// The first Secret goes: b is dropped, c moves to the second Secret's
	// kubeconfig.
	if err := c.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "first", Namespace: "vane-system"}}); err != nil {
		t.Fatal(err)
	}
	reconcile()
	if got := names(); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("members %v, want [c]", got)
	}
	if server("c") != "https://127.0.0.1:3" {
		t.Errorf("c runs against %s, want the second Secret's", server("c"))
	}

	// A Secret without the label is not a remote Secret.
	unlabelled := secret("plain", 0, map[string][]byte{"e": kubeconfig("https://127.0.0.1:4")})
	unlabelled.Labels = nil
	if err := c.Create(ctx, unlabelled); err != nil {
		t.Fatal(err)
	}
	reconcile()
	if got := names(); !slices.Equal(got, []string{"c"}) {
		t.Errorf("members %v, want [c]", got)
	}
}
