package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/api"
)

// plugin builds kubectl-vane into a directory and returns a runner that calls
// it through kubectl's plugin mechanism (kubectl vane ...).
func plugin(t *testing.T, c *framework.Cluster) func(args ...string) string {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "kubectl-vane"), "./cmd/kubectl-vane")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build kubectl-vane: %v\n%s", err, out)
	}
	cache, _ := os.UserCacheDir()
	kubectl := filepath.Join(cache, "vane", "k8s-v1.37.2", "bin", "kubectl")
	return func(args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectl, append([]string{"vane"}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+c.Kubeconfig)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl vane %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s: want %q in:\n%s", what, w, got)
		}
	}
}

// The plugin's commands drive a release through its annotations only.
func TestKubectlPlugin(t *testing.T) {
	a := givenApp(t, 2, "- setWeight: 20\n- pause: {}\n- setWeight: 60\n- pause: {duration: 1h}\n")
	vane := plugin(t, a.c)
	mustContain(t, "list before", vane("list", "-n", a.ns), "dubbo3-provider", "Healthy", "stable version v1")

	a.whenVersionEdited("v2")
	a.waitPhase(api.PhasePaused, 30*time.Second)
	mustContain(t, "list", vane("list", "-n", a.ns), "dubbo3-provider", "Paused", "1/4", "v1", "v2", "20%")
	mustContain(t, "status", vane("status", "dubbo3-provider", "-n", a.ns),
		"dubbo3-provider  Paused  step 1/4  (waiting for: kubectl vane promote dubbo3-provider)",
		"stable  v1       2 ready", "canary  v2       1 ready, weight 20%",
		"route test-v1: subset stable 80%, subset canary 20%")

	mustContain(t, "promote", vane("promote", "dubbo3-provider", "-n", a.ns), "promote requested (vane.io/action=promote)")
	framework.WaitFor(t, 30*time.Second, "the timed pause", func(context.Context) (bool, error) {
		return a.status().CurrentStepIndex == 3, nil
	})
	mustContain(t, "status in a timed pause", vane("status", "-n", a.ns, "dubbo3-provider"), "step 3/4  (pause: ", "left of 1h0m0s)", "weight 60%")

	vane("abort", "dubbo3-provider", "-n", a.ns)
	a.waitPhase(api.PhaseAborted, 10*time.Second)
	vane("retry", "dubbo3-provider", "-n", a.ns)
	a.waitPhase(api.PhasePaused, 30*time.Second)
	vane("promote", "--full", "dubbo3-provider", "-n", a.ns)
	watched := vane("status", "--watch", "dubbo3-provider", "-n", a.ns)
	mustContain(t, "status --watch", watched, "Promoting", "dubbo3-provider  Healthy  step 4/4", "stable  v2       2 ready")
	if st := a.status(); st.Phase != api.PhaseHealthy {
		t.Errorf("after status --watch returned: %+v", st)
	}
}
