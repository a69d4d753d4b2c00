package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/vane-io/vane/e2e/framework"
)

// Config sizes a run.
type Config struct {
	// Name is "quick" or "full".
	Name string

	// HandlerCalls is how many timed calls the in-process handler
	// measurement makes per case.
	HandlerCalls int

	// Clients is the number of concurrent clients (and Deployments) of the
	// admission load; Rounds×2 windows of Window each per kind of edit,
	// after Warmup.
	Clients        int
	Rounds         int
	Window, Warmup time.Duration
	// PacedRate is the total rate of the paced version edits, per second.
	PacedRate float64

	// FloorSamples is how many echo and timer samples the floors take.
	FloorSamples int
	// ReactionRounds single releases, each with ReactionWeights setWeight
	// steps separated by pauses of ReactionPause.
	ReactionRounds  int
	ReactionWeights int
	ReactionPause   time.Duration

	// NonOpted Deployments are created before the scale run; vane's RSS is
	// read Settle after they exist and after a restart.
	NonOpted int
	Settle   time.Duration

	// VaneArgs are added to vane's command line at every start (e.g.
	// --pprof-bind-address to profile it).
	VaneArgs []string

	// Only, when set, names the parts to run (handler, admission,
	// reaction, memory, scale); figures that compare with a part left out
	// show no baseline.
	Only map[string]bool

	// Rollouts releases at once, PerNamespace to a namespace, with pauses
	// of ScalePause; ScaleTimeout bounds each wait.
	Rollouts     int
	PerNamespace int
	ScalePause   time.Duration
	ScaleTimeout time.Duration
}

// Full is the configuration of the issue: 200 clients, 1,000 releases,
// 10,000 non-opted Deployments, pauses of 20 s.
func Full() Config {
	return Config{
		Name: "full", HandlerCalls: 20000,
		Clients: 200, Rounds: 3, Window: 5 * time.Second, Warmup: 500 * time.Millisecond, PacedRate: 100,
		FloorSamples: 50, ReactionRounds: 5, ReactionWeights: 9, ReactionPause: time.Second,
		NonOpted: 10000, Settle: 5 * time.Second,
		Rollouts: 1000, PerNamespace: 100, ScalePause: 20 * time.Second, ScaleTimeout: 20 * time.Minute,
	}
}

// Quick is a check that the benchmark still works, small enough for CI:
// its figures mean little.
func Quick() Config {
	return Config{
		Name: "quick", HandlerCalls: 2000,
		Clients: 20, Rounds: 1, Window: time.Second, Warmup: 200 * time.Millisecond, PacedRate: 40,
		FloorSamples: 5, ReactionRounds: 1, ReactionWeights: 3, ReactionPause: time.Second,
		NonOpted: 100, Settle: time.Second,
		Rollouts: 10, PerNamespace: 5, ScalePause: 2 * time.Second, ScaleTimeout: 2 * time.Minute,
	}
}

// bench is one run.
type bench struct {
	cfg     Config
	env     *env
	tracker *tracker
	report  *report
	log     io.Writer

	// Figures later parts compare with.
	singleLateness, singleCreated sample
	// idleStats is a fresh vane's before any non-opted Deployment exists,
	// freshStats a fresh one's with them.
	idleStats, freshStats procStats
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "[bench %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// leaderArgs start vane as a candidate that polls the lease often: the
// bench holds it during the admission load.
var leaderArgs = []string{"--leader-elect", "--leader-elect-retry-period=200ms"}

// Run runs the benchmark on c and returns its report; progress goes to log.
func Run(ctx context.Context, c *framework.Cluster, cfg Config, log io.Writer) (*report, error) {
	e, err := newEnv(c)
	if err != nil {
		return nil, err
	}
	e.vane.args = cfg.VaneArgs
	b := &bench{cfg: cfg, env: e, report: &report{}, log: log, tracker: newTracker("vane-bench-" + e.runID + "-")}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if c.Reused {
			e.cleanup(ctx)
		}
		_ = e.vane.stop(ctx)
	}()
	b.setupNotes()
	var loads []string
	for _, p := range []struct {
		part, name string
		run        func(context.Context) error
	}{
		{"handler", "handler, in-process", func(context.Context) error { return b.handler() }},
		{"", "vane started as a candidate leader behind the bench's lease", b.startHeld},
		{"admission", "admission", b.admission},
		{"", "fresh vane leading, idle RSS, tracker", b.startLeading},
		{"reaction", "reaction", b.reaction},
		{"memory", "non-opted Deployments, RSS", b.memory},
		{"scale", "scale", b.scale},
	} {
		if p.part != "" && cfg.Only != nil && !cfg.Only[p.part] {
			continue
		}
		start := time.Now()
		b.logf("%s", p.name)
		if err := p.run(ctx); err != nil {
			return b.report, fmt.Errorf("%s: %w", p.name, err)
		}
		b.logf("%s: done in %s", p.name, time.Since(start).Round(100*time.Millisecond))
		if p.part != "" {
			loads = append(loads, fmt.Sprintf("%s %s", p.part, loadAverage()[0]))
		}
	}
	b.report.note("load average (1 min) at the end of each part: %s", strings.Join(loads, ", "))
	return b.report, nil
}

// startHeld takes vane's lease and starts vane (building it) as a
// candidate: its webhook serves, its controller waits.
func (b *bench) startHeld(ctx context.Context) error {
	if err := b.env.holdLease(ctx); err != nil {
		return err
	}
	return b.env.vane.start(ctx, leaderArgs...)
}

// startLeading restarts vane without leader election, as hack/vane.sh runs
// it, reads its idle RSS and starts the tracker.
func (b *bench) startLeading(ctx context.Context) error {
	e := b.env
	if err := e.releaseLease(ctx); err != nil {
		return err
	}
	if err := e.vane.restart(ctx); err != nil {
		return err
	}
	time.Sleep(b.cfg.Settle)
	var err error
	if b.idleStats, err = e.vane.stats(); err != nil {
		return err
	}
	return b.tracker.start(ctx, e)
}

// setupNotes records the machine and the knobs that bound the figures.
func (b *bench) setupNotes() {
	r, e := b.report, b.env
	r.note("mode %s, %s, %d CPUs (GOMAXPROCS %d), load average at start %s", b.cfg.Name, time.Now().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.GOMAXPROCS(0), strings.Join(loadAverage(), " "))
	r.note("client-side rate limits: vane none (controller-runtime's default, QPS -1: API Priority and Fairness governs its ServiceAccount); load generator none (QPS -1, system:masters: exempt); kube-controller-manager %s; kube-scheduler %s",
		e.componentFlags("kube-controller-manager", "--kube-api-"), e.componentFlags("kube-scheduler", "--kube-api-"))
	args := "its defaults (--max-concurrent-reconciles 10)"
	if len(b.cfg.VaneArgs) > 0 {
		args = strings.Join(b.cfg.VaneArgs, " ")
	}
	r.note("vane: hack/vane.sh's flags and %s", args)
}

// loadAverage is the 1, 5 and 15 minute load averages.
func loadAverage() []string {
	raw, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return []string{"?", "?", "?"}
	}
	return f[:3]
}
