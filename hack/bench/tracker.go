package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/vane-io/vane/internal/api"
)

// tracker watches the bench's releases (opted-in Deployments, their
// canaries, VirtualServices and DestinationRules) with informers and keeps,
// per release, every change of what matters, stamped with the time the
// bench saw it.
type tracker struct {
	prefix string

	mu       sync.Mutex
	deploys  map[string][]deployState
	canaries map[string][]canaryState
	vss      map[string][]vsState
	drs      map[string][]drState
}

// deployState is an opted-in Deployment as the bench saw it at a time.
type deployState struct {
	at        time.Time
	version   string // pod template's version label
	available bool   // rolled out: every replica updated and available
	phase     api.Phase
	stable    string
	step      int32
	started   time.Time // StepStartedAt
}

// canaryState is a canary Deployment: exists=false once deleted.
type canaryState struct {
	at            time.Time
	exists, ready bool
}

// vsState is the canary weight of a bench VirtualService's route.
type vsState struct {
	at     time.Time
	canary int32
}

// drState is the version each subset of a bench DestinationRule selects.
type drState struct {
	at             time.Time
	stable, canary string
}

// key is namespace/name.
func key(ns, name string) string { return ns + "/" + name }

func newTracker(prefix string) *tracker {
	return &tracker{
		prefix:   prefix,
		deploys:  map[string][]deployState{},
		canaries: map[string][]canaryState{},
		vss:      map[string][]vsState{},
		drs:      map[string][]drState{},
	}
}

// start runs the informers until ctx ends and returns once they synced.
func (t *tracker) start(ctx context.Context, e *env) error {
	deploys := cache.NewFilteredListWatchFromClient(e.kube.AppsV1().RESTClient(), "deployments", metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.LabelSelector = api.LabelCanary })
	vss := cache.NewListWatchFromClient(e.istio.NetworkingV1().RESTClient(), "virtualservices", metav1.NamespaceAll, fields.Everything())
	drs := cache.NewListWatchFromClient(e.istio.NetworkingV1().RESTClient(), "destinationrules", metav1.NamespaceAll, fields.Everything())
	var synced []cache.InformerSynced
	for _, inf := range []struct {
		lw  cache.ListerWatcher
		obj runtime.Object
		fn  func(any)
	}{
		{deploys, &appsv1.Deployment{}, t.onDeployment},
		{vss, &networkingv1.VirtualService{}, t.onVirtualService},
		{drs, &networkingv1.DestinationRule{}, t.onDestinationRule},
	} {
		i := cache.NewSharedIndexInformer(inf.lw, inf.obj, 0, cache.Indexers{})
		fn := inf.fn
		if _, err := i.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { fn(o) },
			UpdateFunc: func(_, o any) { fn(o) },
			DeleteFunc: func(o any) { fn(deleted(o)) },
		}); err != nil {
			return err
		}
		go i.Run(ctx.Done())
		synced = append(synced, i.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("tracker informers did not sync")
	}
	return nil
}

// gone wraps an object whose delete event was seen.
type gone struct{ obj any }

func deleted(o any) any {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	return gone{o}
}

func unwrap(o any) (any, bool) {
	if g, ok := o.(gone); ok {
		return g.obj, true
	}
	return o, false
}

func (t *tracker) ours(ns string) bool { return strings.HasPrefix(ns, t.prefix) }

func (t *tracker) onDeployment(o any) {
	now := time.Now()
	o, isGone := unwrap(o)
	d, ok := o.(*appsv1.Deployment)
	if !ok || !t.ours(d.Namespace) {
		return
	}
	if d.Labels[api.LabelCanary] == api.LabelCanaryCanary {
		name := strings.TrimSuffix(d.Name, api.CanarySuffix)
		s := canaryState{at: now, exists: !isGone && d.DeletionTimestamp == nil, ready: !isGone && rolledOut(d)}
		t.mu.Lock()
		defer t.mu.Unlock()
		k := key(d.Namespace, name)
		if h := t.canaries[k]; len(h) == 0 || h[len(h)-1].exists != s.exists || h[len(h)-1].ready != s.ready {
			t.canaries[k] = append(h, s)
		}
		return
	}
	if isGone {
		return
	}
	s := deployState{at: now, version: d.Spec.Template.Labels["version"], available: rolledOut(d)}
	if st, err := api.StatusFrom(d.Annotations); err == nil && st != nil {
		s.phase, s.stable, s.step = st.Phase, st.StableVersion, st.CurrentStepIndex
		if st.StepStartedAt != nil {
			s.started = st.StepStartedAt.Time
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := key(d.Namespace, d.Name)
	if h := t.deploys[k]; len(h) == 0 || !sameDeploy(h[len(h)-1], s) {
		t.deploys[k] = append(h, s)
	}
}

func sameDeploy(a, b deployState) bool {
	a.at, b.at = time.Time{}, time.Time{}
	return a == b
}

// rolledOut: every replica updated and available, the old ones gone.
func rolledOut(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return !d.Spec.Paused && s.ObservedGeneration >= d.Generation &&
		s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
}

func (t *tracker) onVirtualService(o any) {
	now := time.Now()
	o, isGone := unwrap(o)
	vs, ok := o.(*networkingv1.VirtualService)
	if !ok || isGone || !t.ours(vs.Namespace) {
		return
	}
	s := vsState{at: now, canary: -1}
	for _, r := range vs.Spec.Http {
		if r.Name != routeName {
			continue
		}
		for _, d := range r.Route {
			if d.Destination.GetSubset() == canarySubset {
				s.canary = d.Weight
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := key(vs.Namespace, vs.Name)
	if h := t.vss[k]; len(h) == 0 || h[len(h)-1].canary != s.canary {
		t.vss[k] = append(h, s)
	}
}

func (t *tracker) onDestinationRule(o any) {
	now := time.Now()
	o, isGone := unwrap(o)
	dr, ok := o.(*networkingv1.DestinationRule)
	if !ok || isGone || !t.ours(dr.Namespace) {
		return
	}
	s := drState{at: now}
	for _, sub := range dr.Spec.Subsets {
		switch sub.Name {
		case stableSubset:
			s.stable = sub.Labels["version"]
		case canarySubset:
			s.canary = sub.Labels["version"]
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := key(dr.Namespace, dr.Name)
	if h := t.drs[k]; len(h) == 0 || h[len(h)-1].stable != s.stable || h[len(h)-1].canary != s.canary {
		t.drs[k] = append(h, s)
	}
}

// Copies of one release's history, safe to read while the informers run.

func (t *tracker) deployHistory(k string) []deployState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]deployState(nil), t.deploys[k]...)
}

func (t *tracker) canaryHistory(k string) []canaryState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]canaryState(nil), t.canaries[k]...)
}

func (t *tracker) vsHistory(k string) []vsState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]vsState(nil), t.vss[k]...)
}

func (t *tracker) drHistory(k string) []drState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]drState(nil), t.drs[k]...)
}

// last is the latest state of an opted-in Deployment (zero if unseen).
func (t *tracker) last(k string) deployState {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.deploys[k]
	if len(h) == 0 {
		return deployState{}
	}
	return h[len(h)-1]
}

// waitAll waits until cond holds for the latest state of every key.
func (t *tracker) waitAll(ctx context.Context, timeout time.Duration, what string, keys []string, cond func(deployState) bool) error {
	return poll(ctx, timeout, what, func(context.Context) (bool, error) {
		for _, k := range keys {
			if !cond(t.last(k)) {
				return false, nil
			}
		}
		return true, nil
	})
}

// count is how many keys' latest state satisfies cond.
func (t *tracker) count(keys []string, cond func(deployState) bool) int {
	n := 0
	for _, k := range keys {
		if cond(t.last(k)) {
			n++
		}
	}
	return n
}

// firstVS is when the VirtualService k first showed canary weight w at or
// after from (zero if never).
func (t *tracker) firstVS(k string, from time.Time, w int32) time.Time {
	for _, s := range t.vsHistory(k) {
		if !s.at.Before(from) && s.canary == w {
			return s.at
		}
	}
	return time.Time{}
}

// waitVS waits until firstVS(k, from, w) is set and returns it.
func (t *tracker) waitVS(ctx context.Context, timeout time.Duration, k string, from time.Time, w int32) (time.Time, error) {
	var at time.Time
	err := poll(ctx, timeout, fmt.Sprintf("%s canary weight %d", k, w), func(context.Context) (bool, error) {
		at = t.firstVS(k, from, w)
		return !at.IsZero(), nil
	})
	return at, err
}
