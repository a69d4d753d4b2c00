// Command watch prints, on every change, where a vane release stands: phase
// and step, the weights of the managed routes, and the Ready pods per
// version. It exits when the release is Healthy (or with -timeout).
//
//	go run ./hack/watch -n demo dubbo3-provider
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/internal/api"
)

func main() {
	ns := flag.String("n", "default", "namespace")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: watch [-n namespace] DEPLOYMENT")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := watch(ctx, *ns, flag.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, "watch:", err)
		os.Exit(1)
	}
}

func watch(ctx context.Context, ns, name string) error {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = networkingv1.AddToScheme(scheme)
	c, err := client.New(ctrl.GetConfigOrDie(), client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	last := ""
	for {
		line, healthy, err := snapshot(ctx, c, ns, name)
		if err != nil {
			return err
		}
		if line != last {
			fmt.Printf("%s  %s\n", time.Now().Format("15:04:05.0"), line)
			last = line
		}
		if healthy {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("release of %s/%s not Healthy: %w", ns, name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// snapshot renders one line: status, route weights, Ready pods per version.
func snapshot(ctx context.Context, c client.Client, ns, name string) (string, bool, error) {
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
		return "", false, err
	}
	st, err := api.StatusFrom(d.Annotations)
	if err != nil || st == nil {
		return "no release (no " + api.AnnotationStatus + ")", false, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-11s step %d/%d  ", st.Phase, st.CurrentStepIndex, st.StepCount)
	if plan, err := api.ParsePlan(d.Annotations); err == nil {
		b.WriteString(weights(ctx, c, ns, plan.Istio))
	}
	key := api.VersionLabel(d.Annotations)
	fmt.Fprintf(&b, "  ready pods: %s", readyPods(ctx, c, ns, d, key))
	if st.Message != "" {
		fmt.Fprintf(&b, "  | %s", st.Message)
	}
	return b.String(), st.Phase == api.PhaseHealthy && !d.Spec.Paused && d.Status.UpdatedReplicas == d.Status.Replicas, nil
}

func weights(ctx context.Context, c client.Client, ns string, cfg api.IstioRouting) string {
	vs := &networkingv1.VirtualService{}
	dr := &networkingv1.DestinationRule{}
	if c.Get(ctx, client.ObjectKey{Namespace: ns, Name: cfg.VirtualService}, vs) != nil || c.Get(ctx, client.ObjectKey{Namespace: ns, Name: cfg.DestinationRule}, dr) != nil {
		return "routes: missing"
	}
	subsets := map[string]string{}
	for _, s := range dr.Spec.Subsets {
		subsets[s.Name] = labels.FormatLabels(s.Labels)
	}
	var parts []string
	for _, h := range vs.Spec.Http {
		if h.Name != cfg.Routes[0] {
			continue
		}
		for _, r := range h.Route {
			parts = append(parts, fmt.Sprintf("%s[%s]=%d", r.Destination.Subset, subsets[r.Destination.Subset], r.Weight))
		}
	}
	return "weights: " + strings.Join(parts, " ")
}

func readyPods(ctx context.Context, c client.Client, ns string, d *appsv1.Deployment, key string) string {
	var pods corev1.PodList
	if c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(d.Spec.Selector.MatchLabels)) != nil {
		return "?"
	}
	count := map[string]int{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				count[p.Labels[key]]++
			}
		}
	}
	var out []string
	for v, n := range count {
		out = append(out, fmt.Sprintf("%s=%d", v, n))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
