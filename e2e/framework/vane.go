package framework

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// vane is the state of the vane process the tests run (one per test binary).
var vane struct {
	sync.Mutex
	env     []string
	started bool
}

// Vane makes sure vane's binary runs against the cluster, registered through
// its MutatingWebhookConfiguration over TLS (hack/vane.sh), and returns the
// cluster. The first call builds and starts it; it stops with the cluster.
func Vane(t testing.TB) *Cluster {
	t.Helper()
	c := Current(t)
	vane.Lock()
	defer vane.Unlock()
	if vane.started {
		return c
	}
	if vane.env == nil {
		ports, err := freePorts(3)
		if err != nil {
			t.Fatal(err)
		}
		runDir := c.RunDir
		if runDir == "" {
			if runDir, err = os.MkdirTemp("", "vane-e2e-vane-"); err != nil {
				t.Fatal(err)
			}
		}
		vane.env = []string{
			"VANE_RUN_DIR=" + runDir,
			"VANE_KUBECONFIG=" + c.Kubeconfig,
			"VANE_WEBHOOK_PORT=" + strconv.Itoa(ports[0]),
			"VANE_PROBE_PORT=" + strconv.Itoa(ports[1]),
			"VANE_METRICS_PORT=" + strconv.Itoa(ports[2]),
			"VANE_LOG_LEVEL=debug",
		}
	}
	if err := c.vaneScript("start"); err != nil {
		t.Fatalf("start vane: %v", err)
	}
	vane.started = true
	return c
}

// RestartVane stops vane and starts it again (without rebuilding), as a
// controller restart or a rescheduled pod would. Extra arguments go to the
// binary's command line until the next restart.
func RestartVane(t testing.TB, args ...string) {
	t.Helper()
	StopVane(t)
	vane.Lock()
	defer vane.Unlock()
	if err := Current(t).vaneScript("start", "VANE_SKIP_BUILD=1", "VANE_EXTRA_ARGS="+strings.Join(args, " ")); err != nil {
		t.Fatalf("restart vane: %v", err)
	}
	vane.started = true
}

// StopVane stops vane; the next Vane call starts it again.
func StopVane(t testing.TB) {
	t.Helper()
	vane.Lock()
	defer vane.Unlock()
	if err := Current(t).vaneScript("stop"); err != nil {
		t.Fatalf("stop vane: %v", err)
	}
	vane.started = false
}

// VaneLog is the path of vane's log.
func VaneLog() string {
	for _, e := range vane.env {
		if dir, ok := strings.CutPrefix(e, "VANE_RUN_DIR="); ok {
			return filepath.Join(dir, "logs", "vane.log")
		}
	}
	return ""
}

func (c *Cluster) vaneScript(cmd string, extraEnv ...string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	run := exec.CommandContext(context.Background(), filepath.Join(root, "hack", "vane.sh"), cmd)
	run.Env = append(append(os.Environ(), vane.env...), extraEnv...)
	out, err := run.CombinedOutput()
	if err != nil {
		return fmt.Errorf("hack/vane.sh %s: %w\n%s", cmd, err, out)
	}
	return nil
}

// VaneMetricsURL is the address of vane's /metrics.
func VaneMetricsURL() string {
	for _, e := range vane.env {
		if port, ok := strings.CutPrefix(e, "VANE_METRICS_PORT="); ok {
			return "http://127.0.0.1:" + port + "/metrics"
		}
	}
	return ""
}

// VaneWebhookAddr is host:port of vane's webhook server.
func VaneWebhookAddr() string {
	for _, e := range vane.env {
		if port, ok := strings.CutPrefix(e, "VANE_WEBHOOK_PORT="); ok {
			return "127.0.0.1:" + port
		}
	}
	return ""
}

// VaneReplica starts a further replica of vane (instance n ≥ 2) with its own
// ports and the given arguments; it stops with the cluster.
func VaneReplica(t testing.TB, n int, args ...string) {
	t.Helper()
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	vane.Lock()
	defer vane.Unlock()
	err = Current(t).vaneScript("start", "VANE_SKIP_BUILD=1", "VANE_INSTANCE="+strconv.Itoa(n),
		"VANE_WEBHOOK_PORT="+strconv.Itoa(ports[0]), "VANE_PROBE_PORT="+strconv.Itoa(ports[1]), "VANE_METRICS_PORT="+strconv.Itoa(ports[2]),
		"VANE_EXTRA_ARGS="+strings.Join(args, " "))
	if err != nil {
		t.Fatalf("start vane replica %d: %v", n, err)
	}
}

// KillVane kills a replica of vane with SIGKILL, as a crash would (n = 1 is
// the first, the one the webhook calls).
func KillVane(t testing.TB, n int) {
	t.Helper()
	vane.Lock()
	defer vane.Unlock()
	instance := ""
	if n > 1 {
		instance = strconv.Itoa(n)
	} else {
		vane.started = false
	}
	if err := Current(t).vaneScript("kill", "VANE_INSTANCE="+instance); err != nil {
		t.Fatalf("kill vane %d: %v", n, err)
	}
}
