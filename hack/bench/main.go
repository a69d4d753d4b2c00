// Command bench measures vane on the local control plane (hack/cluster.sh)
// and prints one table, each figure next to its baseline from the same run:
// admission overhead (webhook registered vs unregistered), the handler
// alone, reaction and abort latency, timer lateness, and 1,000 releases at
// once with vane's memory and CPU. docs/benchmarks.md has the results.
//
//	go run ./hack/bench            # full run (about 10 minutes on 2 cores)
//	go run ./hack/bench -quick     # the CI check: small sizes, under a minute
//
// It starts a cluster of its own (free ports, temporary run dir, torn down
// at the end) with the controller manager's and scheduler's client-side
// rate limits raised, unless -reuse is given: then it uses the cluster of
// $VANE_RUN_DIR (default /tmp/vane-cluster), which nothing else may use
// meanwhile (the bench unregisters vane's webhook and restarts vane).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	quick := flag.Bool("quick", false, "small sizes: a check that the benchmark works, not a measurement")
	reuse := flag.Bool("reuse", false, "use the running cluster of $VANE_RUN_DIR instead of starting one")
	rollouts := flag.Int("rollouts", 0, "releases at once in the scale run (default 1000; quick 10)")
	nonOpted := flag.Int("non-opted", 0, "non-opted Deployments present for the RSS figure and the scale run (default 10000; quick 100)")
	clients := flag.Int("clients", 0, "concurrent clients of the admission load (default 200; quick 20)")
	vaneArgs := flag.String("vane-args", "", "space-separated flags added to vane's command line (e.g. --pprof-bind-address=127.0.0.1:6060)")
	only := flag.String("only", "", "comma-separated parts to run (handler, admission, reaction, memory, scale), for profiling one")
	flag.Parse()
	cfg := Full()
	if *quick {
		cfg = Quick()
	}
	for _, o := range []struct{ flag, cfg *int }{{rollouts, &cfg.Rollouts}, {nonOpted, &cfg.NonOpted}, {clients, &cfg.Clients}} {
		if *o.flag > 0 {
			*o.cfg = *o.flag
		}
	}
	cfg.VaneArgs = strings.Fields(*vaneArgs)
	if *only != "" {
		cfg.Only = map[string]bool{}
		for _, p := range strings.Split(*only, ",") {
			cfg.Only[p] = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := Cluster(ctx, *reuse)
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: stop the cluster:", err)
		}
	}()
	rep, err := Run(ctx, c, cfg, os.Stderr)
	if rep != nil {
		rep.print(os.Stdout)
	}
	return err
}
