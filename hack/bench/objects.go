package main

import (
	"fmt"
	"strings"
	"time"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vane-io/vane/internal/api"
)

// Route and subset names every bench release uses; the VirtualService and
// DestinationRule are named like the Deployment.
const (
	routeName    = "primary"
	stableSubset = "stable"
	canarySubset = "canary"
	// benchLabel marks every object the bench creates.
	benchLabel = "vane.io/bench"
)

// step is one step of a bench strategy: a weight, a timed pause, or (both
// zero) a pause until promoted.
type step struct {
	weight int32
	pause  time.Duration
	hold   bool
}

func setWeight(w int32) step        { return step{weight: w} }
func pauseFor(d time.Duration) step { return step{pause: d} }
func pauseUntilPromoted() step      { return step{hold: true} }
func (s step) isWeight() bool       { return s.pause == 0 && !s.hold }
func (s step) timedPause() bool     { return s.pause > 0 }
func durationYAML(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

// strategy is the vane.io/strategy annotation of a release named name.
func strategy(name string, steps []step) string {
	var b strings.Builder
	fmt.Fprintf(&b, "canary:\n  trafficRouting:\n    istio:\n")
	fmt.Fprintf(&b, "      virtualService: {name: %s, routes: [%s]}\n", name, routeName)
	fmt.Fprintf(&b, "      destinationRule: {name: %s, stableSubsetName: %s, canarySubsetName: %s}\n", name, stableSubset, canarySubset)
	b.WriteString("  steps:\n")
	for _, s := range steps {
		switch {
		case s.hold:
			b.WriteString("  - pause: {}\n")
		case s.timedPause():
			fmt.Fprintf(&b, "  - pause: {duration: %s}\n", durationYAML(s.pause))
		default:
			fmt.Fprintf(&b, "  - setWeight: %d\n", s.weight)
		}
	}
	return b.String()
}

// deployment is a Deployment on version v1 with one container. Opted-in
// ones carry the vane.io/canary label and a strategy for steps.
func deployment(ns, name string, replicas int32, optedIn bool, steps []step) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns,
			Name:      name,
			Labels:    map[string]string{"app": name, benchLabel: "true"},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name, "version": "v1"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "app",
					Image: "registry.example/bench/app:v1",
					Ports: []corev1.ContainerPort{{ContainerPort: 8080, Name: "http"}},
				}}},
			},
		},
	}
	if optedIn {
		d.Labels[api.LabelCanary] = api.LabelCanaryEnabled
		d.Annotations = map[string]string{api.AnnotationStrategy: strategy(name, steps)}
	}
	return d
}

// virtualService routes all of name's traffic to the stable subset.
func virtualService(ns, name string) *networkingv1.VirtualService {
	dest := func(subset string, weight int32) *networkingv1alpha3.HTTPRouteDestination {
		return &networkingv1alpha3.HTTPRouteDestination{
			Destination: &networkingv1alpha3.Destination{Host: name, Subset: subset, Port: &networkingv1alpha3.PortSelector{Number: 8080}},
			Weight:      weight,
		}
	}
	return &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{benchLabel: "true"}},
		Spec: networkingv1alpha3.VirtualService{
			Hosts: []string{name},
			Http: []*networkingv1alpha3.HTTPRoute{{
				Name:    routeName,
				Retries: &networkingv1alpha3.HTTPRetry{Attempts: 3},
				Route:   []*networkingv1alpha3.HTTPRouteDestination{dest(stableSubset, 100), dest(canarySubset, 0)},
			}},
		},
	}
}

// destinationRule has name's stable and canary subsets, both selecting
// every pod of the app until vane pins their versions.
func destinationRule(ns, name string) *networkingv1.DestinationRule {
	subset := func(n string) *networkingv1alpha3.Subset {
		return &networkingv1alpha3.Subset{Name: n, Labels: map[string]string{"app": name}}
	}
	return &networkingv1.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{benchLabel: "true"}},
		Spec: networkingv1alpha3.DestinationRule{
			Host:    name,
			Subsets: []*networkingv1alpha3.Subset{subset(stableSubset), subset(canarySubset)},
		},
	}
}

// versionPatch is the JSON patch of a version edit, as `kubectl edit` sends it.
func versionPatch(v string) []byte {
	return fmt.Appendf(nil, `[{"op":"replace","path":"/spec/template/metadata/labels/version","value":%q}]`, v)
}

// imagePatch changes only the container image: the webhook's
// matchConditions skip it.
func imagePatch(tag string) []byte {
	return fmt.Appendf(nil, `[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"registry.example/bench/app:%s"}]`, tag)
}

// actionPatch sets vane's one-shot action annotation.
func actionPatch(a api.Action) []byte {
	return fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, api.AnnotationAction, a)
}

// weightPatch sets the canary weight of a bench VirtualService (the second
// destination of its only route).
func weightPatch(canary int32) []byte {
	return fmt.Appendf(nil, `[{"op":"replace","path":"/spec/http/0/route/0/weight","value":%d},{"op":"replace","path":"/spec/http/0/route/1/weight","value":%d}]`, 100-canary, canary)
}
