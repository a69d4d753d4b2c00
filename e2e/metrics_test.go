package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

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
		if got, ok := scrape(t, c.series); !ok || got != c.want {
			t.Errorf("%s = %v (found %v), want %v", c.series, got, ok, c.want)
		}
	}
	if got, _ := scrape(t, `vane_admission_decisions_total\{decision="hold"\}`); got != holdsBefore+1 {
		t.Errorf("hold decisions went from %v to %v, want one more", holdsBefore, got)
	}
	if got, ok := scrape(t, `vane_admission_duration_seconds_count`); !ok || got < 1 {
		t.Errorf("admission latency histogram count %v", got)
	}
	if _, ok := scrape(t, `controller_runtime_reconcile_errors_total\{controller="canary"\}`); !ok {
		t.Error("no reconcile error counter for the canary controller")
	}
	a.whenAction(api.ActionPromoteFull)
	a.waitPhase(api.PhaseHealthy, 30*time.Second)
	if got, _ := scrape(t, `vane_rollout_phase\{`+release+`,phase="Healthy"\}`); got != 1 {
		t.Errorf("phase Healthy = %v after promotion", got)
	}
	if _, ok := scrape(t, `vane_rollout_phase\{`+release+`,phase="Paused"\}`); ok {
		t.Error("the Paused series stayed after promotion")
	}
}
