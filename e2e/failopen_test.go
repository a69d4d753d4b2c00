package e2e

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/api"
)

// whenWebhookUnreachable points vane's webhook at a closed port (the
// failurePolicy is Ignore, so admissions pass unheld) until the test ends.
func (a *app) whenWebhookUnreachable() {
	a.t.Helper()
	ctx := context.Background()
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := a.c.Client.Get(ctx, types.NamespacedName{Name: "vane"}, cfg); err != nil {
		a.t.Fatal(err)
	}
	url := *cfg.Webhooks[0].ClientConfig.URL
	setURL := func(u string) error {
		cur := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := a.c.Client.Get(ctx, types.NamespacedName{Name: "vane"}, cur); err != nil {
			return err
		}
		cur.Webhooks[0].ClientConfig.URL = &u
		return a.c.Client.Update(ctx, cur)
	}
	if err := setURL("https://127.0.0.1:1/mutate-apps-v1-deployment"); err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() {
		if err := setURL(url); err != nil {
			a.t.Errorf("restore the webhook URL: %v", err)
		}
	})
	// The API server notices the change within moments: wait until a dry
	// run of a version edit is no longer held.
	framework.WaitFor(a.t, 30*time.Second, "the webhook to be bypassed", func(ctx context.Context) (bool, error) {
		d := &appsv1.Deployment{}
		d.Namespace, d.Name = a.ns, a.name
		if err := a.c.Client.Patch(ctx, d, client.RawPatch(types.JSONPatchType, versionEdit("v9")), client.DryRunAll); err != nil {
			return false, err
		}
		return !d.Spec.Paused, nil
	})
}

// With the webhook unreachable (fail open), a version edit rolls out
// unheld; the controller notices, pauses it at once and runs the release as
// a canary from there. The test measures how many pods of the new version
// slipped out before the hold.
func TestFailOpenCatchUp(t *testing.T) {
	a := givenApp(t, 4, "- setWeight: 50\n- pause: {}\n")
	a.whenWebhookUnreachable()

	var mu sync.Mutex
	slipped, stop := 0, make(chan struct{})
	done := make(chan struct{})
	go func() { // the most v2 pods of the original seen until it is paused
		defer close(done)
		for {
			var pods corev1.PodList
			if err := a.c.Client.List(context.Background(), &pods, client.InNamespace(a.ns), client.MatchingLabels{"version": "v2"}); err == nil {
				n := 0
				for _, p := range pods.Items {
					if p.Labels[api.LabelRole] != api.RoleCanary {
						n++
					}
				}
				mu.Lock()
				slipped = max(slipped, n)
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	a.whenVersionEdited("v2")
	framework.WaitFor(t, 10*time.Second, "the controller's hold", func(context.Context) (bool, error) {
		return a.deployment().Spec.Paused, nil
	})
	time.Sleep(500 * time.Millisecond) // pods created just before the hold
	close(stop)
	<-done
	t.Logf("pods of v2 that slipped out before the hold: %d of 4 replicas", slipped)
	if slipped >= 4 {
		t.Errorf("the whole rollout slipped out (%d pods) before the hold", slipped)
	}

	st := a.waitPhase(api.PhasePaused, 30*time.Second)
	if st.StableVersion != "v1" || st.CanaryVersion != "v2" || st.CanaryWeight != 50 {
		t.Errorf("status %+v, want a v1 → v2 release at 50%%", st)
	}
	if ev := strings.Join(a.events(), "\n"); !strings.Contains(ev, "ReleaseCaughtUp: version v1 → v2 reached the cluster without the webhook's hold") {
		t.Errorf("no ReleaseCaughtUp event:\n%s", ev)
	}

	// Still unreachable, mid-release at 50%: v2 → v3 also reaches the
	// cluster unheld. The canary is drained before its pool or its pods
	// change (the recorder checks every look), and the release restarts
	// for v3 as the webhook would have started it.
	rec := a.record()
	a.whenVersionEdited("v3")
	framework.WaitFor(t, 30*time.Second, "the release of v3 at its pause", func(context.Context) (bool, error) {
		st := a.status()
		return st.CanaryVersion == "v3" && st.Phase == api.PhasePaused && st.CanaryWeight == 50, nil
	})
	rec.halt()
	if ev := strings.Join(a.events(), "\n"); !strings.Contains(ev, "ReleaseCaughtUp: version v2 → v3 reached the cluster during the release from v1 without the webhook's hold") {
		t.Errorf("no ReleaseCaughtUp event for v2 → v3:\n%s", ev)
	}
	if got := canaryWeights(rec.history()); !slices.Contains(got, 0) {
		t.Errorf("canary weights %v: the canary was not drained before it changed to v3", got)
	}
	a.whenAction(api.ActionPromote)
	a.waitPhase(api.PhaseHealthy, 30*time.Second)
	a.waitAvailable("v3")
}
