package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vane-io/vane/internal/api"
)

// edit is one kind of UPDATE the admission load sends.
type edit int

const (
	// editVersion changes the pod template's version label: the webhook
	// is called and holds the native rollout (a patch).
	editVersion edit = iota
	// editImage changes only the image: the webhook's matchConditions
	// skip the call.
	editImage
	// editVersionPaced is editVersion at a fixed rate below what the
	// machine can take (Config.PacedRate), so that latency is not queueing.
	editVersionPaced
)

// edits are the kinds of load, in the order each window runs them.
var edits = []edit{editVersion, editImage, editVersionPaced}

func (k edit) String() string {
	switch k {
	case editVersion:
		return "version edit (webhook holds it)"
	case editImage:
		return "image-only edit (matchConditions skip)"
	default:
		return "version edit, paced"
	}
}

// admissionResult is the latency of every UPDATE of one kind, with the
// webhook registered or not, over all windows.
type admissionResult struct {
	lat      sample
	requests int
	errors   int
	elapsed  time.Duration
	// CPU time vane and the API server spent over the windows, including
	// the warm-ups (counted in all).
	vaneCPU, apiCPU time.Duration
	all             int
	// The API server's own account of its admission work for vane's
	// webhook over the windows (from its /metrics).
	conditions, calls histogramDelta
}

// histogramDelta is the growth of a Prometheus histogram's sum and count.
type histogramDelta struct {
	sum   float64
	count int
}

func (h histogramDelta) mean() time.Duration {
	if h.count == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.count) * float64(time.Second))
}

// cpuPerRequest is the CPU time per UPDATE of a process.
func (r *admissionResult) cpuPerRequest(d time.Duration) time.Duration {
	if r.all == 0 {
		return 0
	}
	return d / time.Duration(r.all)
}

func (r *admissionResult) throughput() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.requests) / r.elapsed.Seconds()
}

// admission measures UPDATE latency on opted-in Deployments with vane's
// webhook registered and unregistered, in alternating windows (ABBA), so
// that the machine's other load falls on both alike. The Deployments are
// paused and vane's controller waits behind a lease the bench holds, so
// neither side carries rollouts or releases: only the admission differs.
func (b *bench) admission(ctx context.Context) error {
	e, cfg := b.env, b.cfg
	ns, err := e.namespace(ctx, "admission")
	if err != nil {
		return err
	}
	names, err := b.loadDeployments(ctx, ns, cfg.Clients)
	if err != nil {
		return err
	}
	saved, err := e.webhookConfig(ctx)
	if err != nil {
		return err
	}
	probe := b.webhookProbe(ns, names[0])
	results := map[bool]map[edit]*admissionResult{true: {}, false: {}}
	for reg := range results {
		for _, k := range edits {
			results[reg][k] = &admissionResult{}
		}
	}
	var seq atomic.Int64
	for round := range cfg.Rounds {
		order := []bool{true, false}
		if round%2 == 1 {
			order = []bool{false, true}
		}
		for _, reg := range order {
			var want = saved
			if !reg {
				want = nil
			}
			if err := e.register(ctx, want, probe); err != nil {
				return err
			}
			for _, k := range edits {
				b.logf("admission round %d/%d: %s, webhook registered=%v", round+1, cfg.Rounds, k, reg)
				b.window(ctx, ns, names, k, &seq, results[reg][k])
			}
		}
	}
	if err := e.register(ctx, saved, probe); err != nil {
		return err
	}
	b.admissionRows(results)
	// The held Deployments would be releases for vane's controller once it
	// leads: remove them first.
	return e.dropNamespace(ctx, ns, true)
}

// loadDeployments creates n opted-in, paused Deployments (no rollout on
// either side of the comparison) and returns their names.
func (b *bench) loadDeployments(ctx context.Context, ns string, n int) ([]string, error) {
	names := make([]string, n)
	steps := []step{setWeight(10), pauseFor(20 * time.Second), setWeight(50), pauseFor(20 * time.Second)}
	err := parallel(ctx, 32, n, func(ctx context.Context, i int) error {
		names[i] = fmt.Sprintf("load-%d", i)
		d := deployment(ns, names[i], 1, true, steps)
		d.Spec.Paused = true
		_, err := b.env.kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create admission deployments: %w", err)
	}
	return names, nil
}

// webhookProbe reports whether the API server calls vane's webhook now: a
// dry-run version edit of ns/name comes back held, with vane's status.
func (b *bench) webhookProbe(ns, name string) func(context.Context) (bool, error) {
	var probes atomic.Int64
	return func(ctx context.Context) (bool, error) {
		v := fmt.Sprintf("probe-%d", probes.Add(1))
		d, err := b.env.kube.AppsV1().Deployments(ns).Patch(ctx, name, types.JSONPatchType, versionPatch(v), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err
		}
		st, _ := api.StatusFrom(d.Annotations)
		return st != nil && st.CanaryVersion == v, nil
	}
}

// window runs one window of load: each client edits its own Deployment
// back to back; requests sent during the warm-up are not recorded.
func (b *bench) window(ctx context.Context, ns string, names []string, k edit, seq *atomic.Int64, out *admissionResult) {
	start := time.Now()
	warm := start.Add(b.cfg.Warmup)
	end := warm.Add(b.cfg.Window)
	metrics0 := b.env.apiserverMetrics(ctx)
	vane0, _ := b.env.vane.stats()
	api0, _ := b.env.apiserverStats()
	// Paced, each client sends one request per period, the clients
	// spread evenly over it.
	period := time.Duration(float64(len(names)) / b.cfg.PacedRate * float64(time.Second))
	var all atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat sample
			errs := 0
			next := start.Add(period * time.Duration(i) / time.Duration(len(names)))
			for {
				if k == editVersionPaced {
					time.Sleep(time.Until(next))
					next = next.Add(period)
				}
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					break
				}
				n := seq.Add(1)
				patch := versionPatch(fmt.Sprintf("v%d", n))
				if k == editImage {
					patch = imagePatch(fmt.Sprintf("t%d", n))
				}
				_, err := b.env.kube.AppsV1().Deployments(ns).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{})
				all.Add(1)
				if t0.Before(warm) {
					continue
				}
				if err != nil {
					errs++
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			out.lat = append(out.lat, lat...)
			out.requests += len(lat)
			out.errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	vane1, _ := b.env.vane.stats()
	api1, _ := b.env.apiserverStats()
	out.elapsed += b.cfg.Window
	out.vaneCPU += vane1.cpu - vane0.cpu
	out.apiCPU += api1.cpu - api0.cpu
	out.all += int(all.Load())
	metrics1 := b.env.apiserverMetrics(ctx)
	for _, m := range []struct {
		name string
		into *histogramDelta
	}{
		{"apiserver_admission_match_condition_evaluation_seconds", &out.conditions},
		{"apiserver_admission_webhook_admission_duration_seconds", &out.calls},
	} {
		sel := `name="deployments.vane.io",operation="UPDATE"`
		m.into.sum += sampleOf(metrics1, m.name+"_sum", sel) - sampleOf(metrics0, m.name+"_sum", sel)
		m.into.count += int(sampleOf(metrics1, m.name+"_count", sel) - sampleOf(metrics0, m.name+"_count", sel))
	}
}

// sampleOf sums the samples of metric whose labels contain every
// comma-separated label=value pair of sel.
func sampleOf(text, metric, sel string) float64 {
	sum := 0.0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		if !allLabels(line, sel) {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func allLabels(line, sel string) bool {
	for _, l := range strings.Split(sel, ",") {
		if !strings.Contains(line, l) {
			return false
		}
	}
	return true
}

func (b *bench) admissionRows(results map[bool]map[edit]*admissionResult) {
	r := b.report
	r.note("admission: %d clients, each editing its own opted-in, paused Deployment back to back (paced: %.0f edits/s in all); %d rounds of %s windows (after %s warm-up) per kind of edit, registered and unregistered alternating ABBA",
		b.cfg.Clients, b.cfg.PacedRate, b.cfg.Rounds, b.cfg.Window, b.cfg.Warmup)
	for _, k := range edits {
		on, off := results[true][k], results[false][k]
		limit, target := 1.15, "p99 ≤ 1.15× unregistered"
		if k == editImage {
			limit, target = 1.02, "p99 ≤ 1.02× unregistered"
		}
		q50, _ := ratio(on.lat.pct(50), off.lat.pct(50), 1e9)
		q99, met := ratio(on.lat.pct(99), off.lat.pct(99), limit)
		r.add(row{
			figure:   "UPDATE latency p50 / p99, " + k.String(),
			value:    fmt.Sprintf("%s / %s (n=%d, %d errors)", dur(on.lat.pct(50)), dur(on.lat.pct(99)), on.requests, on.errors),
			baseline: fmt.Sprintf("%s / %s unregistered (n=%d, %d errors)", dur(off.lat.pct(50)), dur(off.lat.pct(99)), off.requests, off.errors),
			ratio:    fmt.Sprintf("p99 %s (p50 %s)", q99, q50),
			target:   target, met: met,
		})
		qt := "–"
		if off.throughput() > 0 {
			qt = fmt.Sprintf("%.2f×", on.throughput()/off.throughput())
		}
		r.add(row{
			figure:   "UPDATE throughput; CPU per UPDATE of vane + kube-apiserver, " + k.String(),
			value:    fmt.Sprintf("%.0f/s; %s + %s", on.throughput(), dur(on.cpuPerRequest(on.vaneCPU)), dur(on.cpuPerRequest(on.apiCPU))),
			baseline: fmt.Sprintf("%.0f/s; %s + %s unregistered", off.throughput(), dur(off.cpuPerRequest(off.vaneCPU)), dur(off.cpuPerRequest(off.apiCPU))),
			ratio:    qt + " throughput",
		})
		r.add(row{
			figure:   "kube-apiserver's own account (its /metrics), mean per UPDATE: matchConditions that skipped the call; the webhook call, " + k.String(),
			value:    fmt.Sprintf("%s (n=%d); %s (n=%d)", dur(on.conditions.mean()), on.conditions.count, dur(on.calls.mean()), on.calls.count),
			baseline: fmt.Sprintf("n=%d; n=%d unregistered", off.conditions.count, off.calls.count),
		})
		if on.requests == 0 || off.requests == 0 {
			r.problem("admission %s: no requests completed (registered %d, unregistered %d)", k, on.requests, off.requests)
		}
	}
}

// parallel runs fn(i) for i in [0, n) on width goroutines and returns the
// first error.
func parallel(ctx context.Context, width, n int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	errs := make(chan error, width)
	var wg sync.WaitGroup
	for range min(width, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
