// Package members keeps vane's member clusters: the clusters besides its
// own whose Deployments a release spans. They are registered the way Istio
// users register remote clusters: Secrets labelled istio/multiCluster=true in
// vane's namespace, each data key a cluster's name and its value a
// kubeconfig, as `istioctl create-remote-secret` writes them. Adding or
// deleting such a Secret adds or drops a member at once, without a restart.
package members

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/vane-io/vane/internal/canary"
	"github.com/vane-io/vane/internal/metrics"
)

// LabelMultiCluster marks a Secret holding member kubeconfigs (Istio's
// label for remote secrets).
const LabelMultiCluster = "istio/multiCluster"

// Registry runs a cluster.Cluster (client, uncached reader, cache, event
// recorder) for every member named by the remote Secrets of Namespace.
type Registry struct {
	// Namespace holds the remote Secrets.
	Namespace string
	// Self is the name of vane's own cluster: a remote Secret for it is
	// skipped (as Istio skips its own cluster's), or its Deployments would
	// count twice.
	Self string
	// Scheme and Cache configure each member's cluster.Cluster.
	Scheme *runtime.Scheme
	Cache  cache.Options
	// Watch is called once a member's cluster runs, to watch its cache.
	Watch func(name string, c cluster.Cluster) error
	// Changed is called after members were added or dropped.
	Changed func(ctx context.Context)

	// Client reads the Secrets (from the manager's cache).
	client  client.Client
	started chan struct{}
	base    context.Context

	mu      sync.RWMutex
	running map[string]*member
}

type member struct {
	secret string
	sum    [32]byte
	c      cluster.Cluster
	view   canary.Cluster
	stop   context.CancelFunc
}

// SetupWithManager watches the remote Secrets and runs the members in the
// manager's lifetime (on the leader only, like the releases).
func (r *Registry) SetupWithManager(mgr ctrl.Manager) error {
	r.client = mgr.GetClient()
	r.started = make(chan struct{})
	r.running = map[string]*member{}
	if err := mgr.Add(r); err != nil {
		return err
	}
	key := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: "members"}}
	remote := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace && o.GetLabels()[LabelMultiCluster] == "true"
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("members").
		// Every change of any remote Secret recomputes the whole set: a
		// name moves between Secrets, a deleted Secret drops its names.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return []reconcile.Request{key}
		}), builder.WithPredicates(remote)).
		Complete(r)
}

// Start keeps the members' base context until the manager stops, then
// stops them.
func (r *Registry) Start(ctx context.Context) error {
	r.base = ctx
	close(r.started)
	<-ctx.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, m := range r.running {
		m.stop()
		delete(r.running, name)
	}
	return nil
}

// Clusters lists the running members, by name.
func (r *Registry) Clusters() []canary.Cluster {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]canary.Cluster, 0, len(r.running))
	for _, name := range slices.Sorted(maps.Keys(r.running)) {
		out = append(out, r.running[name].view)
	}
	return out
}

// Reconcile makes the running members those the remote Secrets name.
func (r *Registry) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	select {
	case <-r.started:
	case <-ctx.Done():
		return ctrl.Result{}, ctx.Err()
	}
	log := ctrl.LoggerFrom(ctx)
	var list corev1.SecretList
	if err := r.client.List(ctx, &list, client.InNamespace(r.Namespace), client.MatchingLabels{LabelMultiCluster: "true"}); err != nil {
		return ctrl.Result{}, err
	}
	// The Secrets oldest first, so a name in two Secrets stays with the
	// first that named it.
	slices.SortFunc(list.Items, func(a, b corev1.Secret) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name))
	})
	want := map[string]member{}
	kubeconfigs := map[string][]byte{}
	for _, s := range list.Items {
		if !s.DeletionTimestamp.IsZero() {
			continue
		}
		for name, kc := range s.Data {
			if name == r.Self {
				log.Info("Remote Secret names vane's own cluster; skipped", "cluster", name, "secret", s.Name)
				continue
			}
			if prev, dup := want[name]; dup {
				log.Info("Cluster named by two remote Secrets; the first one is used", "cluster", name, "secret", s.Name, "used", prev.secret)
				continue
			}
			want[name] = member{secret: s.Name, sum: sha256.Sum256(kc)}
			kubeconfigs[name] = kc
		}
	}

	if r.sync(ctx, want, kubeconfigs) && r.Changed != nil {
		r.Changed(ctx)
	}
	var names []string
	for _, c := range r.Clusters() {
		names = append(names, c.Name)
	}
	metrics.Members(names)
	return ctrl.Result{}, nil
}

// sync stops the members that are no longer wanted (or whose kubeconfig
// changed) and starts the new ones. It reports whether anything changed.
func (r *Registry) sync(ctx context.Context, want map[string]member, kubeconfigs map[string][]byte) bool {
	log := ctrl.LoggerFrom(ctx)
	changed := false
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, m := range r.running {
		if w, ok := want[name]; !ok || w.sum != m.sum {
			changed = true
			m.stop()
			delete(r.running, name)
			log.Info("Member cluster dropped", "cluster", name, "secret", m.secret)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if _, ok := r.running[name]; ok {
			continue
		}
		m, err := r.start(name, kubeconfigs[name])
		if err != nil {
			// A bad kubeconfig is the Secret's problem: reported, and
			// retried when the Secret changes.
			log.Error(err, "Member cluster not added", "cluster", name, "secret", want[name].secret)
			continue
		}
		m.secret, m.sum = want[name].secret, want[name].sum
		r.running[name] = m
		changed = true
		log.Info("Member cluster added", "cluster", name, "secret", m.secret, "server", m.c.GetConfig().Host)
	}
	return changed
}

// start runs a member's cluster.Cluster (its cache holds what Cache says)
// and watches it.
func (r *Registry) start(name string, kubeconfig []byte) (*member, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig of cluster %s: %w", name, err)
	}
	c, err := cluster.New(cfg, func(o *cluster.Options) {
		o.Scheme = r.Scheme
		o.Cache = r.Cache
	})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	ctx, stop := context.WithCancel(r.base)
	go func() {
		if err := c.Start(ctx); err != nil {
			ctrl.Log.WithName("members").Error(err, "Member cluster stopped", "cluster", name)
		}
	}()
	if r.Watch != nil {
		if err := r.Watch(name, c); err != nil {
			stop()
			return nil, fmt.Errorf("watch cluster %s: %w", name, err)
		}
	}
	view := canary.Cluster{
		Name:     name,
		Client:   client.WithFieldOwner(c.GetClient(), "vane"),
		Reader:   c.GetAPIReader(),
		Recorder: c.GetEventRecorder("vane"),
	}
	return &member{c: c, view: view, stop: stop}, nil
}
