package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/internal/api"
)

// view is what status shows of one release.
type view struct {
	name   string
	status *api.Status
	plan   *api.Plan
	// ready counts Ready pods per version; desired is the Deployment's size.
	ready   map[string]int
	desired int32
	// routes describes the weighted and managed routes, one per line.
	routes []string
}

// load reads a release: the Deployment, its pods and its VirtualService.
func load(ctx context.Context, c client.Client, ns, name string) (*view, error) {
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, d); err != nil {
		return nil, err
	}
	v := &view{name: name, ready: map[string]int{}, desired: 1}
	if d.Spec.Replicas != nil {
		v.desired = *d.Spec.Replicas
	}
	var err error
	if v.status, err = api.StatusFrom(d.Annotations); err != nil {
		return nil, err
	}
	if v.plan, err = api.ParsePlan(d.Annotations); err != nil {
		return nil, err
	}
	key := api.VersionLabel(d.Annotations)
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(d.Spec.Selector.MatchLabels)); err != nil {
		return nil, err
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && ready(&p) {
			v.ready[p.Labels[key]]++
		}
	}
	if !v.plan.Routed() {
		v.routes = []string{"no mesh: the Service spreads requests over the Ready pods of both versions (weight ≈ the canary's share of pods)"}
		return v, nil
	}
	vs := &networkingv1.VirtualService{}
	err = c.Get(ctx, types.NamespacedName{Namespace: ns, Name: v.plan.Istio.VirtualService}, vs)
	switch {
	case apierrors.IsNotFound(err) && v.status != nil && len(v.status.Members) > 0:
		v.routes = []string{fmt.Sprintf("VirtualService %s is in vane's cluster, not this one", v.plan.Istio.VirtualService)}
	case apierrors.IsNotFound(err):
		v.routes = []string{fmt.Sprintf("VirtualService %s not found", v.plan.Istio.VirtualService)}
	case err != nil:
		return nil, err
	default:
		v.routes = describeRoutes(vs, v.plan.Istio)
	}
	return v, nil
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// describeRoutes renders the weighted routes' destinations and the managed
// routes' matches.
func describeRoutes(vs *networkingv1.VirtualService, cfg api.IstioRouting) []string {
	var out []string
	for _, h := range vs.Spec.Http {
		name := h.GetName()
		switch {
		case contains(cfg.Routes, name):
			var parts []string
			for _, r := range h.Route {
				dest := r.Destination.Host
				if r.Destination.Subset != "" {
					dest = "subset " + r.Destination.Subset
				}
				parts = append(parts, fmt.Sprintf("%s %d%%", dest, r.Weight))
			}
			out = append(out, fmt.Sprintf("route %s: %s", name, strings.Join(parts, ", ")))
		case contains(cfg.ManagedRoutes, name):
			var conds []string
			for _, m := range h.Match {
				for hn, sm := range m.Headers {
					conds = append(conds, fmt.Sprintf("%s %s", hn, stringMatch(sm.GetExact(), sm.GetPrefix(), sm.GetRegex())))
				}
			}
			sort.Strings(conds)
			out = append(out, fmt.Sprintf("route %s: %s → canary", name, strings.Join(conds, " and ")))
		}
	}
	return out
}

func stringMatch(exact, prefix, regex string) string {
	switch {
	case exact != "":
		return "= " + exact
	case prefix != "":
		return "starts with " + prefix
	default:
		return "~ " + regex
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// render draws the view; now gives the time left in a timed pause.
func (v *view) render(now time.Time) string {
	var b strings.Builder
	st := v.status
	if st == nil {
		fmt.Fprintf(&b, "%s: no release yet (vane starts one when the pod template's version label changes)\n", v.name)
		return b.String()
	}
	fmt.Fprintf(&b, "%s  %s  step %d/%d", v.name, st.Phase, st.CurrentStepIndex, st.StepCount)
	if d := pauseLeft(v.name, st, v.plan, now); d != "" {
		fmt.Fprintf(&b, "  (%s)", d)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  stable  %-8s %d ready\n", st.StableVersion, v.ready[st.StableVersion])
	if st.Phase != api.PhaseHealthy && st.CanaryVersion != st.StableVersion {
		fmt.Fprintf(&b, "  canary  %-8s %d ready, weight %d%%\n", st.CanaryVersion, v.ready[st.CanaryVersion], st.CanaryWeight)
	}
	for _, r := range v.routes {
		fmt.Fprintf(&b, "  %s\n", r)
	}
	for _, m := range st.Members {
		fmt.Fprintf(&b, "  cluster %-10s %s", m.Cluster, m.Version)
		if m.Canary != "" {
			fmt.Fprintf(&b, "%*s canary %s ready", max(0, 8-len(m.Version)), "", m.Canary)
		}
		if m.Waiting != "" {
			fmt.Fprintf(&b, "  waiting: %s", m.Waiting)
		}
		b.WriteString("\n")
	}
	if st.Message != "" {
		fmt.Fprintf(&b, "  %s\n", st.Message)
	}
	return b.String()
}

// pauseLeft says how long a timed pause still runs, or that the release
// waits for a person.
func pauseLeft(name string, st *api.Status, plan *api.Plan, now time.Time) string {
	if st.CurrentStepIndex >= int32(len(plan.Steps)) || st.Phase == api.PhaseAborted || st.Phase == api.PhaseHealthy {
		return ""
	}
	p := plan.Steps[st.CurrentStepIndex].Pause
	switch {
	case p == nil:
		return ""
	case p.Duration == nil:
		return "waiting for: kubectl vane promote " + name
	case st.StepStartedAt == nil:
		return ""
	}
	left := st.StepStartedAt.Add(*p.Duration).Sub(now).Round(time.Second)
	return fmt.Sprintf("pause: %s left of %s", max(left, 0), *p.Duration)
}

// watchStatus redraws the status on every change (not on the countdown of a
// pause alone) until the release is Healthy or Aborted.
func watchStatus(ctx context.Context, c client.Client, ns, name string, out io.Writer, every time.Duration) error {
	last := ""
	for {
		v, err := load(ctx, c, ns, name)
		if err != nil {
			return err
		}
		now := time.Now()
		if key := v.render(time.Time{}); key != last {
			fmt.Fprintf(out, "── %s\n%s", now.Format("15:04:05.0"), v.render(now))
			last = key
		}
		if v.status != nil && (v.status.Phase == api.PhaseHealthy || v.status.Phase == api.PhaseAborted) && v.ready[v.status.StableVersion] == int(v.desired) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// list prints the opted-in Deployments of a namespace with their phase.
func list(ctx context.Context, c client.Client, ns string, out io.Writer) error {
	var ds appsv1.DeploymentList
	if err := c.List(ctx, &ds, client.InNamespace(ns), client.MatchingLabels{api.LabelCanary: api.LabelCanaryEnabled}); err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tPHASE\tSTEP\tSTABLE\tCANARY\tWEIGHT\tMESSAGE")
	for _, d := range ds.Items {
		st, _ := api.StatusFrom(d.Annotations)
		if st == nil {
			fmt.Fprintf(w, "%s\t-\t-\t%s\t-\t-\tno release yet\n", d.Name, d.Spec.Template.Labels[api.VersionLabel(d.Annotations)])
			continue
		}
		canary := st.CanaryVersion
		if st.Phase == api.PhaseHealthy {
			canary = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%d/%d\t%s\t%s\t%d%%\t%s\n", d.Name, st.Phase, st.CurrentStepIndex, st.StepCount, st.StableVersion, canary, st.CanaryWeight, st.Message)
	}
	return w.Flush()
}

// request sets the action annotation with a merge patch: exactly what
// `kubectl annotate deploy NAME vane.io/action=ACTION` does.
func request(ctx context.Context, c client.Client, ns, name string, action api.Action) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{api.AnnotationAction: string(action)}}})
	if err != nil {
		return err
	}
	d := &appsv1.Deployment{}
	d.Namespace, d.Name = ns, name
	return c.Patch(ctx, d, client.RawPatch(types.MergePatchType, patch))
}
