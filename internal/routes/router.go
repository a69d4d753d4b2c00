// Package routes is vane's one seam for traffic: a Router reads and writes the
// split between the stable and canary versions of one release. Each traffic
// provider lives in its own file.
package routes

import (
	"context"
	"errors"
	"slices"

	"github.com/vane-io/vane/internal/api"
)

// Split is the traffic state of one release, as the mesh expresses it.
type Split struct {
	// StableVersion and CanaryVersion are the version-label values the stable
	// and canary subsets select. "" means the subset does not select on the
	// version label at all (it matches pods of every version).
	StableVersion string
	CanaryVersion string
	// CanaryWeight is the percentage of the weighted routes' traffic sent to
	// the canary; the rest goes to stable.
	CanaryWeight int32
	// HeaderRoutes are the managed routes that send the requests they match
	// to the canary, placed before the weighted routes. Managed routes not
	// listed are removed.
	HeaderRoutes []api.HeaderRoute
}

// Equal reports whether two splits route the same way.
func (s Split) Equal(o Split) bool {
	if s.StableVersion != o.StableVersion || s.CanaryVersion != o.CanaryVersion || s.CanaryWeight != o.CanaryWeight || len(s.HeaderRoutes) != len(o.HeaderRoutes) {
		return false
	}
	for i := range s.HeaderRoutes {
		a, b := s.HeaderRoutes[i], o.HeaderRoutes[i]
		if a.Name != b.Name || !slices.Equal(a.Match, b.Match) {
			return false
		}
	}
	return true
}

// Router reads and writes the traffic split of one release.
//
// Routers own only what a release manages (the weights of the named routes,
// the managed routes by name, the version label of the two pools of pods)
// and leave every other field of the user's objects as it was.
type Router interface {
	// Observe returns the split the mesh objects express now. When a referenced
	// object, route, destination or subset does not exist it returns an error
	// wrapping ErrMissing: the release must wait, not write half a route.
	// Where managed routes disagree, CanaryWeight is the largest canary weight
	// found, so callers that guard on "no traffic on the canary" stay safe.
	Observe(ctx context.Context) (Split, error)

	// Ensure writes want, changing only what differs, and reports whether it
	// wrote anything. It writes subsets before weights. It does not judge
	// safety: callers must not ask it to relabel a subset that carries traffic
	// unless pods of the new version are ready behind it. Conflicts with
	// concurrent writers are retried on fresh reads.
	Ensure(ctx context.Context, want Split) (bool, error)
}

// ErrMissing is wrapped by errors about objects, routes or subsets that a
// strategy names but the cluster does not have (yet).
var ErrMissing = errors.New("referenced object missing")
