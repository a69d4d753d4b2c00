package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vane-io/vane/internal/api"
)

// memory creates the non-opted Deployments and measures vane's RSS after,
// in the same process and in a fresh one, next to a fresh vane's before
// any existed.
func (b *bench) memory(ctx context.Context) error {
	e, cfg, baseline := b.env, b.cfg, b.idleStats
	for _, ns := range e.namespaces {
		// The releases so far leave vane's cache.
		if err := e.dropNamespace(ctx, ns, true); err != nil {
			return err
		}
	}
	ns, err := e.namespace(ctx, "nonopted")
	if err != nil {
		return err
	}
	b.logf("creating %d non-opted Deployments", cfg.NonOpted)
	start := time.Now()
	err = parallel(ctx, 32, cfg.NonOpted, func(ctx context.Context, i int) error {
		// Paused with no replicas: no ReplicaSet, no pods; what matters is
		// that the Deployment objects exist.
		d := deployment(ns, fmt.Sprintf("plain-%d", i), 0, false, nil)
		d.Spec.Paused = true
		_, err := e.kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("create non-opted deployments: %w", err)
	}
	created := time.Since(start)
	time.Sleep(b.cfg.Settle)
	same, err := e.vane.stats()
	if err != nil {
		return err
	}
	if err := e.vane.restart(ctx); err != nil {
		return err
	}
	time.Sleep(b.cfg.Settle)
	fresh, err := e.vane.stats()
	if err != nil {
		return err
	}
	b.freshStats = fresh
	q, met := ratio(time.Duration(fresh.rss), time.Duration(baseline.rss), 1.10)
	b.report.add(row{
		figure:   fmt.Sprintf("vane RSS with %d non-opted Deployments (fresh process; peak since start)", cfg.NonOpted),
		value:    fmt.Sprintf("%s (peak %s); same process before the restart: %s", mib(fresh.rss), mib(fresh.hwm), mib(same.rss)),
		baseline: fmt.Sprintf("%s (peak %s) with none, fresh process", mib(baseline.rss), mib(baseline.hwm)),
		ratio:    q,
		target:   "flat (≤ 1.10×)",
		met:      met,
	})
	b.report.note("non-opted: %d paused Deployments with no replicas, created in %s; RSS read %s after they existed and %s after a restart",
		cfg.NonOpted, created.Round(100*time.Millisecond), cfg.Settle, cfg.Settle)
	return nil
}

// scaleSteps is the strategy for the scale run.
func scaleSteps(pause time.Duration) []step {
	return []step{setWeight(10), pauseFor(pause), setWeight(50), pauseFor(pause)}
}

// scale runs cfg.Rollouts releases at once on a fresh vane (restarted by
// memory) and checks that each walks every step exactly once.
func (b *bench) scale(ctx context.Context) error {
	e, cfg, t := b.env, b.cfg, b.tracker
	f := scaleFigures{n: cfg.Rollouts}
	steps := scaleSteps(cfg.ScalePause)
	keys, namespaces, err := b.scaleSetup(ctx, steps, &f)
	if err != nil {
		return err
	}
	rec1, err1 := b.reconciles()
	req1 := b.requests()
	b.logf("editing %d versions", f.n)
	edited, first, err := b.editAll(ctx, keys)
	if err != nil {
		return err
	}
	f.spread = slices.MaxFunc(edited, time.Time.Compare).Sub(first)
	healthy := func(s deployState) bool { return s.phase == api.PhaseHealthy && s.stable == "v2" && s.available }
	waitErr := t.waitAll(ctx, cfg.ScaleTimeout, fmt.Sprintf("%d releases Healthy on v2", f.n), keys, healthy)
	f.done = time.Since(first)
	if f.vane[2], err = e.vane.stats(); err != nil {
		return err
	}
	f.apiserver[2], _ = e.apiserverStats()
	rec2, err2 := b.reconciles()
	f.reconciles, f.failed = rec2-rec1, err2-err1
	f.requests = map[string]float64{}
	for m, n := range b.requests() {
		f.requests[m] = n - req1[m]
	}
	f.complete = t.count(keys, healthy)
	if waitErr != nil {
		b.report.problem("scale: %d of %d releases Healthy on v2 after %s", f.complete, f.n, cfg.ScaleTimeout)
	}
	b.scaleSamples(keys, edited, steps, &f)
	f.bad = b.stepChecks(ctx, keys, edited, namespaces)
	b.scaleRows(f)
	return nil
}

// scaleSetup creates the releases, cfg.PerNamespace to a namespace, and
// waits until vane adopted each on v1. It returns their keys and
// namespaces, and records vane's and the API server's figures before and
// after in f.
func (b *bench) scaleSetup(ctx context.Context, steps []step, f *scaleFigures) (keys, namespaces []string, err error) {
	e, cfg := b.env, b.cfg
	if err := b.ensurePods(ctx, 3*f.n+100); err != nil {
		return nil, nil, err
	}
	for i := 0; i < f.n; i += cfg.PerNamespace {
		ns, err := e.namespace(ctx, fmt.Sprintf("scale-%d", i/cfg.PerNamespace))
		if err != nil {
			return nil, nil, err
		}
		namespaces = append(namespaces, ns)
	}
	if f.vane[0], err = e.vane.stats(); err != nil {
		return nil, nil, err
	}
	f.apiserver[0], _ = e.apiserverStats()
	b.logf("creating %d releases in %d namespaces", f.n, len(namespaces))
	start := time.Now()
	keys = make([]string, f.n)
	if err := parallel(ctx, 32, f.n, func(ctx context.Context, i int) error {
		ns, name := namespaces[i/cfg.PerNamespace], fmt.Sprintf("app-%d", i)
		keys[i] = key(ns, name)
		return b.createRelease(ctx, ns, name, steps)
	}); err != nil {
		return nil, nil, err
	}
	if err := b.tracker.waitAll(ctx, cfg.ScaleTimeout, fmt.Sprintf("%d releases available and adopted on v1", f.n), keys, adoptedOn("v1")); err != nil {
		return nil, nil, fmt.Errorf("%w (%d of %d adopted)", err, b.tracker.count(keys, adoptedOn("v1")), f.n)
	}
	f.setup = time.Since(start)
	if f.vane[1], err = e.vane.stats(); err != nil {
		return nil, nil, err
	}
	f.apiserver[1], _ = e.apiserverStats()
	return keys, namespaces, nil
}

// editAll edits the version of every release to v2 as fast as 64 clients
// can, and returns when each edit was accepted and when the first was sent.
func (b *bench) editAll(ctx context.Context, keys []string) ([]time.Time, time.Time, error) {
	edited := make([]time.Time, len(keys))
	first := time.Now()
	err := parallel(ctx, 64, len(keys), func(ctx context.Context, i int) error {
		ns, name, _ := strings.Cut(keys[i], "/")
		at, err := b.editVersion(ctx, ns, name, "v2")
		edited[i] = at
		return err
	})
	return edited, first, err
}

// scaleSamples reads the lateness, edit → canary created and pause ends
// of every release from the tracker.
func (b *bench) scaleSamples(keys []string, edited []time.Time, steps []step, f *scaleFigures) {
	t := b.tracker
	for i, k := range keys {
		f.late = append(f.late, b.lateness(k, edited[i], steps)...)
		for _, s := range t.canaryHistory(k) {
			if s.at.After(edited[i]) && s.exists {
				f.created = append(f.created, s.at.Sub(edited[i]))
				break
			}
		}
		for _, d := range t.deployHistory(k) {
			if d.at.After(edited[i]) && d.step == 1 && !d.started.IsZero() {
				f.pauseEnds = append(f.pauseEnds, d.started.Add(b.cfg.ScalePause))
				break
			}
		}
	}
}

// scaleFigures is what the scale run measured.
type scaleFigures struct {
	n, complete         int
	reconciles, failed  int
	setup, done, spread time.Duration
	late, created       sample
	pauseEnds           []time.Time
	bad                 stepCheck
	vane, apiserver     [3]procStats // before set-up, after set-up, at the end
	// requests counts vane's API requests during the releases, by method.
	requests map[string]float64
}

func (b *bench) scaleRows(f scaleFigures) {
	r, cfg := b.report, b.cfg
	r.note("scale: %d releases (%d per namespace, replicas 1, each with its VirtualService and DestinationRule), steps setWeight 10, pause %s, setWeight 50, pause %s, with the %d non-opted Deployments present",
		f.n, cfg.PerNamespace, cfg.ScalePause, cfg.ScalePause, cfg.NonOpted)
	met := "yes"
	if f.complete < f.n {
		met = "no"
	}
	r.add(row{
		figure: fmt.Sprintf("%d releases at once: complete (Healthy on v2)", f.n),
		value:  fmt.Sprintf("%d/%d, last %s after the first edit (edits within %s)", f.complete, f.n, dur(f.done), dur(f.spread)),
		target: "all complete", met: met,
	})
	met = "yes"
	if f.bad.problems() > 0 {
		met = "no"
	}
	r.add(row{
		figure: "steps missed or repeated",
		value:  f.bad.String(),
		target: "0", met: met,
	})
	spread := time.Duration(0)
	if len(f.pauseEnds) > 0 {
		spread = slices.MaxFunc(f.pauseEnds, time.Time.Compare).Sub(slices.MinFunc(f.pauseEnds, time.Time.Compare))
	}
	q, _ := ratio(f.late.pct(99), b.singleLateness.pct(99), 1e9)
	r.add(row{
		figure:   fmt.Sprintf("timer lateness, %d releases at once: p50 / p99 (first pauses ended within %s)", f.n, dur(spread)),
		value:    f.late.p50p99(),
		baseline: "1 release: " + dur(b.singleLateness.pct(50)) + " / " + dur(b.singleLateness.pct(99)),
		ratio:    q, target: "p99 ≤ 1 s", met: within(f.late.pct(99), time.Second),
	})
	r.add(row{
		figure:   fmt.Sprintf("version edit accepted → canary Deployment created, %d at once: p50 / p99", f.n),
		value:    f.created.p50p99(),
		baseline: "1 release: " + b.singleCreated.p50p99(),
	})
	peak := f.vane[2].hwm
	r.add(row{
		figure:   "vane peak RSS (VmHWM) from a fresh start through set-up and the releases",
		value:    mib(peak),
		baseline: mib(b.freshStats.rss) + " idle (fresh, with the non-opted Deployments)",
		target:   "≤ 256 MiB", met: within(time.Duration(peak), 256<<20),
	})
	r.add(row{
		figure: "vane CPU time (utime+stime): set-up (adopting) + releases",
		value: fmt.Sprintf("%.1f s + %.1f s (over %s + %s wall; %d reconciles for the releases, %.1f each, %d failed)", (f.vane[1].cpu - f.vane[0].cpu).Seconds(), (f.vane[2].cpu - f.vane[1].cpu).Seconds(),
			dur(f.setup), dur(f.done), f.reconciles, float64(f.reconciles)/float64(f.n), f.failed),
		baseline: fmt.Sprintf("kube-apiserver %.1f s + %.1f s", (f.apiserver[1].cpu - f.apiserver[0].cpu).Seconds(), (f.apiserver[2].cpu - f.apiserver[1].cpu).Seconds()),
	})
	total := 0.0
	for _, n := range f.requests {
		total += n
	}
	r.add(row{
		figure: "vane's API requests during the releases, per release (client-go's rest_client_requests_total: reads, writes, Events, leases)",
		value:  fmt.Sprintf("%s; %.1f per reconcile", perRelease(f.requests, f.n), total/float64(max(f.reconciles, 1))),
	})
}

// perRelease formats request counts by method as "total (GET a, PATCH b, …)"
// divided by n.
func perRelease(byMethod map[string]float64, n int) string {
	methods := slices.Sorted(maps.Keys(byMethod))
	total, parts := 0.0, []string{}
	for _, m := range methods {
		if v := byMethod[m] / float64(n); v >= 0.05 {
			parts = append(parts, fmt.Sprintf("%s %.1f", m, v))
		}
		total += byMethod[m]
	}
	return fmt.Sprintf("%.1f (%s)", total/float64(n), strings.Join(parts, ", "))
}

// requests is vane's API requests so far by method (client-go's
// rest_client_requests_total); nil when /metrics does not answer.
func (b *bench) requests() map[string]float64 {
	out := map[string]float64{}
	for _, m := range []string{"GET", "LIST", "WATCH", "POST", "PUT", "PATCH", "DELETE"} {
		v := b.scrape("rest_client_requests_total{", func(l string) bool { return strings.Contains(l, `method="`+m+`"`) })
		if v < 0 {
			return nil
		}
		out[m] = v
	}
	return out
}

// stepCheck counts releases whose history breaks the step order.
type stepCheck struct {
	// status: the status annotation's step index went back or skipped one.
	status int
	// weights: the canary weights written were not exactly 10, 50, 100, 0.
	weights int
	// transitions is vane_step_transitions_total summed over the releases
	// (want 4 per release); -1 when unreadable.
	transitions, wantTransitions int
	// events counts StepAdvanced Events (want 4 per release), duplicates
	// those recorded more than once for the same step.
	events, duplicates int
}

func (c stepCheck) problems() int {
	n := c.status + c.weights + c.duplicates
	if c.transitions != c.wantTransitions {
		n++
	}
	return n
}

func (c stepCheck) String() string {
	return fmt.Sprintf("%d (status order broken: %d, weight sequence ≠ 10,50,100,0: %d; vane_step_transitions_total %d/%d; StepAdvanced Events %d/%d, %d duplicated)",
		c.problems(), c.status, c.weights, c.transitions, c.wantTransitions, c.events, c.wantTransitions, c.duplicates)
}

func (b *bench) stepChecks(ctx context.Context, keys []string, edited []time.Time, namespaces []string) stepCheck {
	t := b.tracker
	c := stepCheck{wantTransitions: 4 * len(keys)}
	for i, k := range keys {
		prev := int32(-1)
		for _, d := range t.deployHistory(k) {
			if d.at.Before(edited[i]) || d.phase == api.PhaseHealthy {
				continue
			}
			if prev >= 0 && (d.step < prev || d.step > prev+1) {
				c.status++
				break
			}
			prev = d.step
		}
		var weights []int32
		for _, s := range t.vsHistory(k) {
			if s.at.After(edited[i]) {
				weights = append(weights, s.canary)
			}
		}
		if !slices.Equal(weights, []int32{10, 50, 100, 0}) {
			c.weights++
			if c.weights <= 3 {
				b.report.problem("%s: canary weights written %v, want [10 50 100 0]", k, weights)
			}
		}
	}
	if c.status > 0 {
		b.report.problem("%d releases: status step index went back or skipped", c.status)
	}
	c.transitions = b.transitions(namespaces)
	if c.transitions != c.wantTransitions {
		b.report.problem("vane_step_transitions_total over the scale releases is %d, want %d", c.transitions, c.wantTransitions)
	}
	c.events, c.duplicates = b.stepEvents(ctx, namespaces)
	if c.duplicates > 0 {
		b.report.problem("%d StepAdvanced Events recorded more than once", c.duplicates)
	}
	return c
}

// transitions sums vane_step_transitions_total over the namespaces.
func (b *bench) transitions(namespaces []string) int {
	return int(b.scrape("vane_step_transitions_total{", func(line string) bool {
		return slices.ContainsFunc(namespaces, func(ns string) bool { return strings.Contains(line, `namespace="`+ns+`"`) })
	}))
}

// reconciles is how many times vane's controller reconciled so far, in
// all and with an error (conflicts included).
func (b *bench) reconciles() (all, errors int) {
	all = int(b.scrape(`controller_runtime_reconcile_total{controller="canary"`, func(string) bool { return true }))
	errors = int(b.scrape(`controller_runtime_reconcile_total{controller="canary"`, func(l string) bool { return strings.Contains(l, `result="error"`) }))
	return all, errors
}

// scrape sums the samples of vane's /metrics whose line starts with prefix
// and satisfies keep; -1 when /metrics does not answer.
func (b *bench) scrape(prefix string, keep func(string) bool) float64 {
	resp, err := http.Get(b.env.vane.metrics)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) || !keep(line) {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// stepEvents counts the StepAdvanced Events in the namespaces and those
// that occurred more than once (an Event series, or two Events with the
// same message on the same Deployment).
func (b *bench) stepEvents(ctx context.Context, namespaces []string) (total, duplicates int) {
	for _, ns := range namespaces {
		list, err := b.env.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=" + "StepAdvanced"})
		if err != nil {
			continue
		}
		seen := map[string]bool{}
		for _, ev := range list.Items {
			k := ev.InvolvedObject.Name + "\x00" + ev.Message
			n := occurrences(&ev)
			total += n
			if seen[k] || n > 1 {
				duplicates++
			}
			seen[k] = true
		}
	}
	return total, duplicates
}

func occurrences(ev *corev1.Event) int {
	n := 1
	if ev.Series != nil && int(ev.Series.Count) > n {
		n = int(ev.Series.Count)
	}
	if int(ev.Count) > n {
		n = int(ev.Count)
	}
	return n
}

// ensurePods adds fake nodes when the cluster cannot take need more pods.
func (b *bench) ensurePods(ctx context.Context, need int) error {
	free, err := b.env.freePods(ctx)
	if err != nil {
		return err
	}
	if free >= need {
		return nil
	}
	const perNode = 2000
	nodes := (need - free + perNode - 1) / perNode
	b.report.note("added %d bench-only kwok node(s) of %d pods: the cluster had room for %d more pods, the scale run needs up to %d", nodes, perNode, free, need)
	return b.env.addNodes(ctx, nodes, perNode)
}

// apiserverStats reads the API server's /proc figures (zero when unknown).
func (e *env) apiserverStats() (procStats, error) {
	pid, err := readPid(filepath.Join(e.c.RunDir, "pids", "kube-apiserver.pid"))
	if err != nil {
		return procStats{}, err
	}
	return readProc(pid)
}
