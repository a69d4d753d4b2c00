package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/api"
)

// legacyRouting is the seed's header strategy routing (rollouts-legacy):
// a host-level split between two Services and a managed lane route.
const legacyRouting = `canaryService: dubbo3-provider-canary
stableService: dubbo3-provider
trafficRouting:
  managedRoutes:
    - name: test-v2
  istio:
    virtualService:
      name: provider
      routes:
        - test-v1
`

const legacySteps = `- setCanaryScale:
    weight: 100
- setHeaderRoute:
    name: test-v2
    match:
    - headerName: lane
      headerValue:
        exact: test-v2
- pause: {}
`

// givenLegacyApp deploys the seed's rollouts-legacy provider: two Services
// and a VirtualService split by host with a lane match on test-v1.
func givenLegacyApp(t *testing.T, replicas int) *app {
	t.Helper()
	c := framework.Vane(t)
	a := &app{t: t, c: c, ns: c.Namespace(t), name: "dubbo3-provider"}
	for _, svc := range []string{"dubbo3-provider", "dubbo3-provider-canary"} {
		a.apply(fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %s, namespace: %s}
spec:
  ports: [{name: grpc-20880, protocol: TCP, port: 20880, targetPort: 20880}]
  selector: {app: dubbo3-provider}
`, svc, a.ns))
	}
	a.apply(legacyVirtualService(a.ns))
	a.apply(providerWith(a.ns, replicas, legacyRouting, legacySteps))
	a.waitAvailable("v1")
	a.waitAdopted("v1")
	return a
}

func (a *app) selector(svc string) map[string]string {
	a.t.Helper()
	s := &corev1.Service{}
	if err := a.c.Client.Get(context.Background(), a.key(svc), s); err != nil {
		a.t.Fatal(err)
	}
	return s.Spec.Selector
}

// The seed's header scenario: requests with `lane: test-v2` go to v2 through
// a route placed before test-v1, the canary runs at 100% of the replicas,
// and the release waits for a person.
func TestHeaderLaneSeedScenario(t *testing.T) {
	a := givenLegacyApp(t, 2)
	before := a.virtualService()
	a.whenVersionEdited("v2")
	a.waitPhase(api.PhasePaused, 30*time.Second)

	vs := a.virtualService()
	if len(vs.Spec.Http) != 3 || vs.Spec.Http[0].Name != "test-v2" || vs.Spec.Http[1].Name != "test-v1" {
		t.Fatalf("routes %v, want [test-v2 test-v1 default]", routeNames(vs.Spec.Http))
	}
	lane := vs.Spec.Http[0]
	if got := lane.Match[0].Headers["lane"].GetExact(); got != "test-v2" || lane.Route[0].Destination.Host != "dubbo3-provider-canary" {
		t.Errorf("lane route matches lane=%q to %s, want test-v2 to dubbo3-provider-canary", got, lane.Route[0].Destination.Host)
	}
	if c := a.canary(); c == nil || *c.Spec.Replicas != 2 || c.Status.AvailableReplicas != 2 {
		t.Errorf("canary %v, want 2 available replicas (setCanaryScale weight 100)", c)
	}
	if s, c := a.selector("dubbo3-provider")["version"], a.selector("dubbo3-provider-canary")["version"]; s != "v1" || c != "v2" {
		t.Errorf("Service selectors pinned to %q/%q, want v1/v2", s, c)
	}
	time.Sleep(2 * time.Second)
	if st := a.status(); st.Phase != api.PhasePaused {
		t.Fatalf("the pause ended on its own: %+v", st)
	}

	a.whenAction(api.ActionPromote)
	a.waitPhase(api.PhaseHealthy, 30*time.Second)
	a.waitAvailable("v2")
	if _, ok := a.deployment().Annotations[api.AnnotationAction]; ok {
		t.Error("the action annotation was not cleared")
	}
	after := a.virtualService()
	if diff := cmp.Diff(&before.Spec, &after.Spec, protocmp.Transform()); diff != "" {
		t.Errorf("VirtualService not as it was (-before,+after):\n%s", diff)
	}
	if s, c := a.selector("dubbo3-provider")["version"], a.selector("dubbo3-provider-canary")["version"]; s != "v2" || c != "v2" {
		t.Errorf("Service selectors %q/%q after promotion, want v2/v2", s, c)
	}
	if !a.canaryGone() {
		t.Error("canary left after promotion")
	}
	if ev := strings.Join(a.events(), "\n"); !strings.Contains(ev, "Promoted: pause at step 3/3 ended by a person") {
		t.Errorf("no Promoted event:\n%s", ev)
	}
}

func routeNames[T interface{ GetName() string }](rs []T) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.GetName())
	}
	return out
}

// laneAndWeight combines a lane route to the canary with a weight on the
// default route in one release, which Flagger cannot do.
const laneAndWeight = `- setHeaderRoute: {name: lane, match: [{headerName: x-lane, headerValue: {prefix: canary}}]}
- setWeight: 50
- pause: {}
- setWeight: 80
- pause: {}
`

const managedRouting = `trafficRouting:
  managedRoutes: [{name: lane}]
  istio:
    virtualService: {name: provider, routes: [test-v1]}
    destinationRule: {name: dubbo-provider, stableSubsetName: stable, canarySubsetName: canary}
`

func givenLaneAndWeightApp(t *testing.T) *app {
	t.Helper()
	c := framework.Vane(t)
	a := &app{t: t, c: c, ns: c.Namespace(t), name: "dubbo3-provider"}
	vs, dr := meshYAML(a.ns)
	a.apply(vs)
	a.apply(dr)
	a.apply(providerWith(a.ns, 2, managedRouting, laneAndWeight))
	a.waitAvailable("v1")
	a.waitAdopted("v1")
	return a
}

// Abort mid-weight: all traffic and the lane route go to stable within a
// second, the canary goes to zero, the Deployment stays held on v2; retry
// walks the steps again; promote-full then finishes the release.
func TestAbortRetryPromoteFull(t *testing.T) {
	a := givenLaneAndWeightApp(t)
	rec := a.record()
	a.whenVersionEdited("v2")
	a.waitPhase(api.PhasePaused, 30*time.Second)
	if vs := a.virtualService(); routeNames(vs.Spec.Http)[1] != "lane" {
		t.Fatalf("routes %v, want the lane route before test-v1", routeNames(vs.Spec.Http))
	}

	aborted := a.whenAction(api.ActionAbort)
	framework.WaitFor(t, 5*time.Second, "all traffic on stable", func(context.Context) (bool, error) {
		vs := a.virtualService()
		for _, h := range vs.Spec.Http {
			if h.Name == "lane" {
				return false, nil
			}
			for _, d := range h.Route {
				if h.Name == "test-v1" && d.Destination.Subset == "canary" && d.Weight != 0 {
					return false, nil
				}
			}
		}
		return true, nil
	})
	if took := time.Since(aborted); took > time.Second {
		t.Errorf("abort took %s to send all traffic to stable, want within a second", took)
	}
	st := a.waitPhase(api.PhaseAborted, 10*time.Second)
	framework.WaitFor(t, 10*time.Second, "canary removed, both subsets on v1", func(context.Context) (bool, error) {
		dr := a.destinationRule()
		return a.canaryGone() && subsetVersions(dr) == "stable=v1 canary=v1", nil
	})
	if d := a.deployment(); !d.Spec.Paused || d.Spec.Template.Labels["version"] != "v2" {
		t.Errorf("aborted Deployment paused=%v on %s, want held on v2", d.Spec.Paused, d.Spec.Template.Labels["version"])
	}
	if st.CanaryWeight != 0 || st.StableVersion != "v1" {
		t.Errorf("aborted status %+v", st)
	}

	a.whenAction(api.ActionRetry)
	framework.WaitFor(t, 30*time.Second, "retried release paused at 50%", func(context.Context) (bool, error) {
		st := a.status()
		return st.Phase == api.PhasePaused && st.CanaryWeight == 50 && st.CurrentStepIndex == 2, nil
	})
	a.whenAction(api.ActionPromoteFull)
	a.waitPhase(api.PhaseHealthy, 30*time.Second)
	a.waitAvailable("v2")
	rec.history() // no traffic to a pool without Ready pods, lane route included
	if diff := cmp.Diff([]int32{0, 50, 0, 50, 100, 0}, a.shiftedWeights()); diff != "" {
		t.Errorf("canary weights (-want,+got):\n%s", diff)
	}
	events := strings.Join(a.events(), "\n")
	for _, want := range []string{"RolloutAborted: aborted at step 2/5", "RolloutRetried: release of v2 retried from step 0", "Promoted: promoted in full: steps 3 to 5 skipped"} {
		if !strings.Contains(events, want) {
			t.Errorf("no event %q in:\n%s", want, events)
		}
	}
}

// Scaling the original mid-release keeps the canary proportional; editing
// its image (same version) updates the canary too.
func TestScaleAndEditMidRelease(t *testing.T) {
	a := givenApp(t, 2, "- setWeight: 50\n- pause: {}\n")
	a.whenVersionEdited("v2")
	a.waitPhase(api.PhasePaused, 30*time.Second)
	if c := a.canary(); *c.Spec.Replicas != 1 {
		t.Fatalf("canary has %d replicas at 50%% of 2, want 1", *c.Spec.Replicas)
	}
	a.update(func(d *appsv1.Deployment) {
		d.Spec.Replicas = ptrTo[int32](6)
		d.Spec.Template.Spec.Containers[0].Image += "-patched"
	})
	framework.WaitFor(t, 30*time.Second, "canary at 3 replicas on the new image", func(context.Context) (bool, error) {
		c := a.canary()
		return *c.Spec.Replicas == 3 && c.Status.AvailableReplicas == 3 && c.Status.UpdatedReplicas == 3 &&
			strings.HasSuffix(c.Spec.Template.Spec.Containers[0].Image, "-patched"), nil
	})
	if st := a.status(); st.Phase != api.PhasePaused || st.CanaryWeight != 50 {
		t.Errorf("status %+v, want still paused at 50%%", st)
	}
	var pods corev1.PodList
	if err := a.c.Client.List(context.Background(), &pods, client.InNamespace(a.ns), client.MatchingLabels{"version": "v1"}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 6 {
		t.Errorf("%d stable pods, want 6 (the original, still on v1, scaled natively)", len(pods.Items))
	}
	a.whenAction(api.ActionPromote)
	a.waitPhase(api.PhaseHealthy, 30*time.Second)
	a.waitAvailable("v2")
}

func ptrTo[T any](v T) *T { return &v }

// legacyVirtualService is the seed's rollouts-legacy VirtualService: split
// by host, a lane match on test-v1 and a default route to stable.
func legacyVirtualService(ns string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: provider, namespace: %s}
spec:
  gateways: [mesh]
  hosts: [dubbo3-provider]
  http:
  - name: test-v1
    match: [{headers: {lane: {exact: test-v1}}}]
    route:
    - destination: {host: dubbo3-provider, port: {number: 20880}}
      weight: 100
    - destination: {host: dubbo3-provider-canary, port: {number: 20880}}
      weight: 0
  - route:
    - destination: {host: dubbo3-provider, port: {number: 20880}}
`, ns)
}
