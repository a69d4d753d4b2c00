package canary

// Releases across clusters: the clusters a release spans, how their
// Deployments are watched and read, and each one's part in the status.

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/vane-io/vane/internal/api"
)

// memberCheck is how often a release that spans clusters checks that every
// cluster still answers, when nothing else wakes it.
const memberCheck = 30 * time.Second

// memberTimeout bounds a reconcile of a release that spans clusters, so a
// member that does not answer cannot hold a worker.
const memberTimeout = 30 * time.Second

// Cluster is a cluster whose Deployments a release can span.
type Cluster struct {
	Name string
	// Client writes; Reader reads uncached.
	Client   client.Client
	Reader   client.Reader
	Recorder events.EventRecorder
}

// target is one cluster's Deployment of a release.
type target struct {
	Cluster
	d *appsv1.Deployment
}

// clusters is vane's own cluster first, then the members.
func (r *Reconciler) clusters() []Cluster {
	out := []Cluster{{Name: r.ClusterName, Client: r.Client, Reader: r.Reader, Recorder: r.Recorder}}
	if r.Members != nil {
		out = append(out, r.Members()...)
	}
	return out
}

// ClustersChanged wakes every release in progress, in vane's cluster and
// in every member, when a member cluster is added or dropped: the
// releases it took part in go on without it, those it joins take it in.
func (r *Reconciler) ClustersChanged(ctx context.Context) {
	seen := map[types.NamespacedName]bool{}
	for _, c := range r.clusters() {
		var list appsv1.DeploymentList
		if err := c.Reader.List(ctx, &list, client.MatchingLabels{api.LabelCanary: api.LabelCanaryEnabled}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "List releases to wake", "cluster", c.Name)
			continue
		}
		for i := range list.Items {
			d := &list.Items[i]
			st, _ := api.StatusFrom(d.Annotations)
			if key := client.ObjectKeyFromObject(d); st.InProgress() && !seen[key] {
				seen[key] = true
				r.wake() <- event.GenericEvent{Object: d}
			}
		}
	}
}

// WatchCluster wakes releases on changes of a member cluster's Deployments
// (its cache holds those labelled vane.io/canary): an opted-in Deployment
// wakes its own release, a canary its owner's. A member's Deployment has the
// namespace and name of the release it takes part in.
func (r *Reconciler) WatchCluster(name string, c cluster.Cluster) error {
	toRelease := func(_ context.Context, d *appsv1.Deployment) []reconcile.Request {
		key := client.ObjectKeyFromObject(d)
		if d.Labels[api.LabelCanary] == api.LabelCanaryCanary {
			owner := metav1.GetControllerOf(d)
			if owner == nil || owner.Kind != "Deployment" {
				return nil
			}
			key.Name = owner.Name
		}
		return []reconcile.Request{{NamespacedName: key}}
	}
	// The member's Deployments are indexed as vane's own (contention);
	// before the watch below starts their informer.
	if err := c.GetFieldIndexer().IndexField(context.Background(), &appsv1.Deployment{}, routingIndex, routingKeys); err != nil {
		return fmt.Errorf("index deployments by routing: %w", err)
	}
	return r.ctrl.Watch(source.Kind(c.GetCache(), &appsv1.Deployment{}, handler.TypedEnqueueRequestsFromMapFunc(toRelease)))
}

// releaseStatus is the status of the release in progress among ts, nil when
// none: the one that started or moved last (its step began last), so the
// edit of one cluster that restarts a release wins over the others' copies
// of the release it replaces. home is the Deployment it was read from,
// whose strategy rules.
func releaseStatus(ts []target) (home *appsv1.Deployment, st *api.Status) {
	for _, t := range ts {
		s, _ := api.StatusFrom(t.d.Annotations)
		if !s.InProgress() {
			continue
		}
		if st == nil || startedAt(s).After(startedAt(st)) {
			home, st = t.d, s
		}
	}
	return home, st
}

func startedAt(s *api.Status) time.Time {
	if s.StepStartedAt == nil {
		return time.Time{}
	}
	return s.StepStartedAt.Time
}

// memberStatus is each cluster's part of a release, for a person; nil when
// vane has no member clusters.
func (r *Reconciler) memberStatus(ts []target, obs []MemberObservation, moves []MemberMove, sideBySide bool) []api.MemberStatus {
	if r.Members == nil || len(r.Members()) == 0 {
		return nil
	}
	out := make([]api.MemberStatus, len(ts))
	for i, o := range obs {
		out[i] = api.MemberStatus{Cluster: ts[i].Name, Version: o.Version, Waiting: moves[i].Waiting}
		if sideBySide {
			// The Deployment is the canary.
			out[i].Canary = fmt.Sprintf("%d/%d", ts[i].d.Status.AvailableReplicas, o.Replicas)
		} else if c := o.Canary; c != nil {
			ready := int32(0)
			if c.Ready {
				ready = c.Replicas
			}
			out[i].Canary = fmt.Sprintf("%d/%d", ready, c.Replicas)
		}
	}
	return out
}

// errUnreachable marks a cluster of a release that did not answer.
var errUnreachable = errors.New("unreachable")
