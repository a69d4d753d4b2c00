package canary

import (
	"testing"

	"github.com/vane-io/vane/internal/api"
)

func TestShared(t *testing.T) {
	seed := api.IstioRouting{VirtualService: "vs", Routes: []string{"primary"}, DestinationRule: "dr", StableSubset: "stable", CanarySubset: "canary"}
	with := func(change func(r *api.IstioRouting)) api.IstioRouting {
		r := seed
		change(&r)
		return r
	}
	for name, tc := range map[string]struct {
		other api.IstioRouting
		want  string
	}{
		"the same route": {seed, "route primary of VirtualService vs"},
		"another route of the same VirtualService, other subsets": {with(func(r *api.IstioRouting) {
			r.Routes, r.DestinationRule = []string{"secondary"}, "other"
		}), ""},
		"a managed (header) route of one is a weighted route of the other": {with(func(r *api.IstioRouting) {
			r.Routes, r.ManagedRoutes, r.DestinationRule = []string{"secondary"}, []string{"primary"}, "other"
		}), "route primary of VirtualService vs"},
		"other routes, the same subsets": {with(func(r *api.IstioRouting) { r.Routes = []string{"secondary"} }), "subset stable of DestinationRule dr"},
		"the seed 003 pair v2 and v3 against v1": {with(func(r *api.IstioRouting) {
			r.Routes, r.CanarySubset = []string{"secondary"}, "v3"
		}), "subset stable of DestinationRule dr"},
		"another VirtualService and DestinationRule": {with(func(r *api.IstioRouting) { r.VirtualService, r.DestinationRule = "other", "other" }), ""},
	} {
		t.Run(name, func(t *testing.T) {
			if got := shared(seed, tc.other); got != tc.want {
				t.Errorf("shared = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHolds(t *testing.T) {
	fresh := api.Status{Phase: api.PhaseProgressing}
	moved := api.Status{Phase: api.PhasePaused, CurrentStepIndex: 1, CanaryWeight: 20}
	for name, tc := range map[string]struct {
		a, b         api.Status
		aName, bName string
		want         bool
	}{
		"the one that moved traffic holds":             {moved, fresh, "z", "a", true},
		"the one that has not waits":                   {fresh, moved, "a", "z", false},
		"neither moved: the first by name":             {fresh, fresh, "a", "b", true},
		"neither moved: the second by name waits":      {fresh, fresh, "b", "a", false},
		"both moved (guard added late): first by name": {moved, moved, "a", "b", true},
	} {
		t.Run(name, func(t *testing.T) {
			if got := holds(tc.a, tc.aName, tc.b, tc.bName); got != tc.want {
				t.Errorf("holds = %t, want %t", got, tc.want)
			}
		})
	}
}
