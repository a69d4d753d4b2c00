package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vane-io/vane/e2e/framework"
)

// TestQuickBench runs the benchmark at its quick sizes on a cluster of its
// own: a check that it still works end to end (every figure measured, every
// release complete, no step missed or repeated), not a timed test: no
// figure is compared with its target here.
func TestQuickBench(t *testing.T) {
	if framework.Skipped() {
		t.Skip("VANE_E2E_SKIP=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Cluster(ctx, os.Getenv("VANE_BENCH_REUSE") == "1")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	}()
	var log strings.Builder
	rep, err := Run(ctx, c, Quick(), &log)
	if rep != nil {
		var table strings.Builder
		rep.print(&table)
		t.Logf("progress:\n%s\nreport:\n%s", log.String(), table.String())
	}
	if err != nil {
		c.DumpLogs(os.Stderr)
		t.Fatal(err)
	}
	for _, p := range rep.problems {
		t.Error(p)
	}
	for _, r := range rep.rows {
		if strings.Contains(r.value, "no samples") {
			t.Errorf("%s: no samples", r.figure)
		}
	}
}
