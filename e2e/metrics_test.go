package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/api"
)

// scrape returns the value of the first sample whose line matches re.
func scrape(t *testing.T, re string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(framework.VaneMetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + re + ` ([0-9.e+-]+)$`).FindStringSubmatch(string(body))
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// /metrics during a release shows its phase, weight, step and transitions,
// the admission decisions and their latency.
func TestMetricsDuringARelease(t *testing.T) {
	a := givenApp(t, 2, "- setWeight: 30\n- pause: {}\n")
	holdsBefore, _ := scrape(t, `vane_admission_decisions_total\{decision="hold"\}`)
	a.whenVersionEdited("v2")
	a.waitPhase(api.PhasePaused, 30*time.Second)
	release := fmt.Sprintf(`name="dubbo3-provider",namespace="%s"`, a.ns)
	for _, c := range []struct {
		series string
		want   float64
	}{
		{`vane_rollout_phase\{` + release + `,phase="Paused"\}`, 1},
		{`vane_rollout_canary_weight\{` + release + `\}`, 30},
		{`vane_rollout_step\{` + release + `\}`, 1},
		{`vane_step_transitions_total\{` + release + `\}`, 1},
	} {
		framework.WaitFor(t, 5*time.Second, fmt.Sprintf("%s = %v", c.series, c.want), func(context.Context) (bool, error) {
			got, ok := scrape(t, c.series)
			return ok && got == c.want, nil
		})
	}
	// At least one more: the API server re-runs admission when it retries a
	// patch that met a concurrent write.
	if got, _ := scrape(t, `vane_admission_decisions_total\{decision="hold"\}`); got < holdsBefore+1 {
		t.Errorf("hold decisions went from %v to %v, want at least one more", holdsBefore, got)
	}
	if got, ok := scrape(t, `vane_admission_duration_seconds_count`); !ok || got < 1 {
		t.Errorf("admission latency histogram count %v", got)
	}
	if _, ok := scrape(t, `controller_runtime_reconcile_errors_total\{controller="canary"\}`); !ok {
		t.Error("no reconcile error counter for the canary controller")
	}
	a.whenAction(api.ActionPromoteFull)
	a.waitPhase(api.PhaseHealthy, 30*time.Second)
	// The gauge follows the status write by a moment.
	framework.WaitFor(t, 5*time.Second, "phase Healthy in /metrics", func(context.Context) (bool, error) {
		got, _ := scrape(t, `vane_rollout_phase\{`+release+`,phase="Healthy"\}`)
		return got == 1, nil
	})
	if _, ok := scrape(t, `vane_rollout_phase\{`+release+`,phase="Paused"\}`); ok {
		t.Error("the Paused series stayed after promotion")
	}
}

// The webhook's matchConditions keep updates that cannot start or steer a
// release (a scale, an image-only edit) from reaching vane at all.
func TestMatchConditionsSkipUnrelatedUpdates(t *testing.T) {
	a := givenApp(t, 2, "- setWeight: 30\n- pause: {}\n")
	calls := func() float64 {
		n := 0.0
		for _, d := range []string{"allow", "deny", "hold", "patch"} {
			v, _ := scrape(t, `vane_admission_decisions_total\{decision="`+d+`"\}`)
			n += v
		}
		return n
	}
	before := calls()
	a.update(func(d *appsv1.Deployment) {
		d.Spec.Replicas = ptrTo[int32](3)
		d.Spec.Template.Spec.Containers[0].Image += "-same-version"
	})
	if got := calls(); got != before {
		t.Errorf("a scale and an image edit reached vane: %v admissions, was %v", got, before)
	}
	a.update(func(d *appsv1.Deployment) { d.Spec.Template.Labels["team"] = "a" })
	if got := calls(); got < before+1 {
		t.Errorf("a pod-template label edit: %v admissions, want at least %v", got, before+1)
	}
}
