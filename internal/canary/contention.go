package canary

import (
	"context"
	"errors"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/internal/api"
)

// errContended marks a release whose routes or subsets another release in
// progress holds.
var errContended = errors.New("in use by another release")

// contention checks, in every cluster, for another release in progress
// that writes the same routes or subsets as this one (two opted-in
// Deployments naming one VirtualService route, as reviews-v2 and
// reviews-v3 beside reviews-v1 would). Guard: two releases must never move
// the same weights, or each would undo the other's steps. The one that
// holds them is the one that has moved traffic, else the first by name;
// the other waits, Degraded, naming it. Releases of the same name in
// other clusters are this release.
func (r *Reconciler) contention(ctx context.Context, home *appsv1.Deployment, plan *api.Plan, st api.Status) error {
	if !plan.Routed() {
		return nil
	}
	key := routingKey("VirtualService", plan.Istio.VirtualService)
	for _, c := range r.clusters() {
		var list appsv1.DeploymentList
		if err := c.Client.List(ctx, &list, client.InNamespace(home.Namespace), client.MatchingFields{routingIndex: key}); err != nil {
			return fmt.Errorf("cluster %s: list releases routed by VirtualService %s: %w", c.Name, plan.Istio.VirtualService, err)
		}
		for i := range list.Items {
			o := &list.Items[i]
			other, _ := api.StatusFrom(o.Annotations)
			if o.Name == home.Name || !other.InProgress() {
				continue
			}
			otherPlan, err := api.ParsePlan(o.Annotations)
			if err != nil {
				continue
			}
			what := shared(plan.Istio, otherPlan.Istio)
			if what == "" || !holds(*other, o.Name, st, home.Name) {
				continue
			}
			return fmt.Errorf("%s is %w: the release of %s (cluster %s); this release waits for it to end", what, errContended, o.Name, c.Name)
		}
	}
	return nil
}

// shared names what two routings both write ("" when nothing): a route of
// one VirtualService, or a subset of one DestinationRule.
func shared(a, b api.IstioRouting) string {
	if a.VirtualService == b.VirtualService {
		for _, route := range slices.Concat(a.Routes, a.ManagedRoutes) {
			if slices.Contains(b.Routes, route) || slices.Contains(b.ManagedRoutes, route) {
				return fmt.Sprintf("route %s of VirtualService %s", route, a.VirtualService)
			}
		}
	}
	if a.BySubset() && a.DestinationRule == b.DestinationRule {
		for _, s := range []string{a.StableSubset, a.CanarySubset} {
			// A side-by-side release leaves the subsets alone, but an
			// in-place one relabels them: both count.
			if s == b.StableSubset || s == b.CanarySubset {
				return fmt.Sprintf("subset %s of DestinationRule %s", s, a.DestinationRule)
			}
		}
	}
	return ""
}

// holds reports whether release a holds what it shares with release b: the
// one that has moved traffic (past its first step, or a weight on its
// canary) holds it; between two that have, or two that have not, the first
// by name.
func holds(a api.Status, aName string, b api.Status, bName string) bool {
	aMoved := a.CurrentStepIndex > 0 || a.CanaryWeight > 0
	bMoved := b.CurrentStepIndex > 0 || b.CanaryWeight > 0
	if aMoved != bMoved {
		return aMoved
	}
	return aName < bName
}
