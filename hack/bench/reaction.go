package main

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/vane-io/vane/internal/api"
)

// reactionResult gathers the reaction figures of single releases.
type reactionResult struct {
	subset, created, firstWeight, readyToWeight, lateness, abort sample
	// echo is the floor of any controller's reaction: a write the bench
	// makes, seen by a watch in the bench that writes another object at
	// once, seen by the bench's tracker (two watch hops, one write).
	echo sample
	// timer is the floor of a timed move: a Go timer in the bench that
	// writes an object when it fires, seen by the tracker.
	timer sample
}

// reactionSteps: weights 10, 20, … each followed by a timed pause, the last
// by a pause until promoted, where the release is aborted.
func reactionSteps(weights int, pause time.Duration) []step {
	var out []step
	for i := 1; i <= weights; i++ {
		out = append(out, setWeight(int32(10*i)))
		if i < weights {
			out = append(out, pauseFor(pause))
		} else {
			out = append(out, pauseUntilPromoted())
		}
	}
	return out
}

// reaction measures single releases, one at a time, each in a namespace of
// its own: version edit → subset, canary, first weight; canary Ready →
// weight; pause end → next weight; abort → all traffic on stable.
func (b *bench) reaction(ctx context.Context) error {
	res := &reactionResult{}
	if err := b.floors(ctx, res); err != nil {
		return err
	}
	steps := reactionSteps(b.cfg.ReactionWeights, b.cfg.ReactionPause)
	for round := range b.cfg.ReactionRounds {
		b.logf("reaction round %d/%d", round+1, b.cfg.ReactionRounds)
		if err := b.reactionRound(ctx, round, steps, res); err != nil {
			return fmt.Errorf("reaction round %d: %w", round+1, err)
		}
	}
	b.reactionRows(res)
	b.singleLateness, b.singleCreated = res.lateness, res.created
	return nil
}

func (b *bench) reactionRound(ctx context.Context, round int, steps []step, res *reactionResult) error {
	e, t := b.env, b.tracker
	ns, err := e.namespace(ctx, fmt.Sprintf("reaction-%d", round))
	if err != nil {
		return err
	}
	const name = "app"
	k := key(ns, name)
	if err := b.createRelease(ctx, ns, name, steps); err != nil {
		return err
	}
	if err := t.waitAll(ctx, time.Minute, "release adopted", []string{k}, adoptedOn("v1")); err != nil {
		return err
	}
	edited, err := b.editVersion(ctx, ns, name, "v2")
	if err != nil {
		return err
	}
	last := int32(len(steps) - 1)
	if err := t.waitAll(ctx, time.Minute+time.Duration(len(steps))*b.cfg.ReactionPause, "release paused at its last step", []string{k}, func(s deployState) bool {
		return s.phase == api.PhasePaused && s.step == last
	}); err != nil {
		return err
	}
	b.reactionTimes(k, edited, steps, res)
	if _, err := e.kube.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, actionPatch(api.ActionAbort), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("abort: %w", err)
	}
	aborted := time.Now()
	at, err := t.waitVS(ctx, 30*time.Second, k, aborted, 0)
	if err != nil {
		return err
	}
	res.abort = append(res.abort, at.Sub(aborted))
	return nil
}

// reactionTimes reads one release's history after it reached its last step.
func (b *bench) reactionTimes(k string, edited time.Time, steps []step, res *reactionResult) {
	t := b.tracker
	for _, s := range t.drHistory(k) {
		if s.at.After(edited) && s.canary == "v2" {
			res.subset = append(res.subset, s.at.Sub(edited))
			break
		}
	}
	var ready time.Time
	for _, s := range t.canaryHistory(k) {
		if s.at.After(edited) && s.exists {
			res.created = append(res.created, s.at.Sub(edited))
			break
		}
	}
	for _, s := range t.canaryHistory(k) {
		if s.at.After(edited) && s.ready {
			ready = s.at
			break
		}
	}
	first := t.firstVS(k, edited, steps[0].weight)
	if !first.IsZero() {
		res.firstWeight = append(res.firstWeight, first.Sub(edited))
		if !ready.IsZero() {
			res.readyToWeight = append(res.readyToWeight, first.Sub(ready))
		}
	}
	res.lateness = append(res.lateness, b.lateness(k, edited, steps)...)
}

// lateness is, for each timed pause of a release, the time from its end
// (its StepStartedAt, recorded by vane to the microsecond, plus its
// duration) to the bench seeing the next weight written.
func (b *bench) lateness(k string, edited time.Time, steps []step) sample {
	var out sample
	hist := b.tracker.deployHistory(k)
	for i, s := range steps {
		if !s.timedPause() {
			continue
		}
		var started time.Time
		for _, d := range hist {
			if d.at.After(edited) && d.step == int32(i) && !d.started.IsZero() {
				started = d.started
				break
			}
		}
		if started.IsZero() {
			continue
		}
		end := started.Add(s.pause)
		// After the last step the promotion sends all traffic to the canary.
		next := int32(100)
		if i+1 < len(steps) && steps[i+1].isWeight() {
			next = steps[i+1].weight
		}
		if at := b.tracker.firstVS(k, end, next); !at.IsZero() {
			out = append(out, at.Sub(end))
		}
	}
	return out
}

// adoptedOn: vane recorded v as the stable version of a rolled-out
// Deployment.
func adoptedOn(v string) func(deployState) bool {
	return func(s deployState) bool {
		return s.available && s.phase == api.PhaseHealthy && s.stable == v && s.version == v
	}
}

// createRelease creates an opted-in Deployment with its VirtualService and
// DestinationRule.
func (b *bench) createRelease(ctx context.Context, ns, name string, steps []step) error {
	e := b.env
	if _, err := e.istio.NetworkingV1().VirtualServices(ns).Create(ctx, virtualService(ns, name), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create virtualservice %s/%s: %w", ns, name, err)
	}
	if _, err := e.istio.NetworkingV1().DestinationRules(ns).Create(ctx, destinationRule(ns, name), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create destinationrule %s/%s: %w", ns, name, err)
	}
	if _, err := e.kube.AppsV1().Deployments(ns).Create(ctx, deployment(ns, name, 1, true, steps), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create deployment %s/%s: %w", ns, name, err)
	}
	return nil
}

// editVersion edits the version label and returns when the API server
// accepted the edit: when its response arrived. Every figure measured from
// an accepted request starts there.
func (b *bench) editVersion(ctx context.Context, ns, name, v string) (time.Time, error) {
	d, err := b.env.kube.AppsV1().Deployments(ns).Patch(ctx, name, types.JSONPatchType, versionPatch(v), metav1.PatchOptions{})
	if err != nil {
		return time.Time{}, fmt.Errorf("edit version of %s/%s: %w", ns, name, err)
	}
	if !d.Spec.Paused {
		return time.Time{}, fmt.Errorf("edit version of %s/%s: not held by the webhook (spec.paused=false)", ns, name)
	}
	return time.Now(), nil
}

// floors measures the cluster's own reaction floor in this run: the echo
// (watch hop, write, watch hop) and the timer (timer, write, watch hop).
func (b *bench) floors(ctx context.Context, res *reactionResult) error {
	e, t := b.env, b.tracker
	ns, err := e.namespace(ctx, "floor")
	if err != nil {
		return err
	}
	vss := e.istio.NetworkingV1().VirtualServices(ns)
	for _, n := range []string{"echo-in", "echo-out"} {
		if _, err := vss.Create(ctx, virtualService(ns, n), metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	echoCtx, stop := context.WithCancel(ctx)
	defer stop()
	lw := cache.NewListWatchFromClient(e.istio.NetworkingV1().RESTClient(), "virtualservices", ns, fields.OneTermEqualSelector("metadata.name", "echo-in"))
	inf := cache.NewSharedIndexInformer(lw, &networkingv1.VirtualService{}, 0, cache.Indexers{})
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, o any) {
		vs := o.(*networkingv1.VirtualService)
		w := vs.Spec.Http[0].Route[1].Weight
		_, _ = vss.Patch(echoCtx, "echo-out", types.JSONPatchType, weightPatch(w), metav1.PatchOptions{})
	}}); err != nil {
		return err
	}
	go inf.Run(echoCtx.Done())
	if !cache.WaitForCacheSync(echoCtx.Done(), inf.HasSynced) {
		return fmt.Errorf("echo informer did not sync")
	}
	out := key(ns, "echo-out")
	for i := range b.cfg.FloorSamples {
		w := int32(i%99 + 1)
		sent := time.Now()
		if _, err := vss.Patch(ctx, "echo-in", types.JSONPatchType, weightPatch(w), metav1.PatchOptions{}); err != nil {
			return err
		}
		t0 := time.Now()
		at, err := t.waitVS(ctx, 10*time.Second, out, sent, w)
		if err != nil {
			return err
		}
		res.echo = append(res.echo, at.Sub(t0))
		time.Sleep(20 * time.Millisecond)
	}
	for i := range b.cfg.FloorSamples {
		w := int32(i%99 + 1)
		due := time.Now().Add(200 * time.Millisecond)
		time.AfterFunc(time.Until(due), func() {
			_, _ = vss.Patch(ctx, "echo-in", types.JSONPatchType, weightPatch(w), metav1.PatchOptions{})
		})
		at, err := t.waitVS(ctx, 10*time.Second, key(ns, "echo-in"), due, w)
		if err != nil {
			return err
		}
		res.timer = append(res.timer, at.Sub(due))
	}
	return nil
}

func (b *bench) reactionRows(res *reactionResult) {
	r := b.report
	r.note("reaction: %d single releases one after another, steps setWeight 10, pause %s, … setWeight %d, pause {} then abort; replicas 1; floors from %d echo and %d timer samples",
		b.cfg.ReactionRounds, b.cfg.ReactionPause, 10*b.cfg.ReactionWeights, len(res.echo), len(res.timer))
	echo := "echo floor " + dur(res.echo.pct(50)) + " / " + dur(res.echo.pct(99))
	timer := "timer floor " + dur(res.timer.pct(50)) + " / " + dur(res.timer.pct(99))
	for _, x := range []struct {
		figure   string
		s        sample
		baseline string
		floor    sample
		limit    time.Duration
	}{
		{"version edit accepted → stable/canary subsets written", res.subset, echo, res.echo, 0},
		{"version edit accepted → canary Deployment created", res.created, echo, res.echo, 100 * time.Millisecond},
		{"version edit accepted → first weight written", res.firstWeight, echo, res.echo, 0},
		{"canary Ready → weight written", res.readyToWeight, echo, res.echo, 200 * time.Millisecond},
		{"timer lateness, 1 release: pause end → next weight written", res.lateness, timer, res.timer, 100 * time.Millisecond},
		{"abort annotation accepted → 100% stable written", res.abort, echo, res.echo, time.Second},
	} {
		q, _ := ratio(x.s.pct(99), x.floor.pct(99), 1e9)
		rw := row{figure: x.figure + ": p50 / p99", value: x.s.p50p99(), baseline: x.baseline, ratio: q}
		if x.limit > 0 {
			rw.target, rw.met = "p99 ≤ "+dur(x.limit), within(x.s.pct(99), x.limit)
		}
		if len(x.s) == 0 {
			b.report.problem("%s: no samples", x.figure)
		}
		r.add(rw)
	}
}
