// Package metrics exposes vane's Prometheus metrics on controller-runtime's
// registry, served at /metrics next to controller-runtime's own (reconcile
// errors and durations, work queues, webhook requests).
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/vane-io/vane/internal/api"
)

var (
	phase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vane_rollout_phase",
		Help: "1 for the phase each release is in; sum by (phase) counts releases by phase.",
	}, []string{"namespace", "name", "phase"})
	canaryWeight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vane_rollout_canary_weight",
		Help: "Percentage of the weighted routes' traffic on the canary.",
	}, []string{"namespace", "name"})
	step = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vane_rollout_step",
		Help: "Index of the step a release is at (equal to the step count once promoting).",
	}, []string{"namespace", "name"})
	stepTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vane_step_transitions_total",
		Help: "Steps completed, by release.",
	}, []string{"namespace", "name"})
	admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vane_admission_decisions_total",
		Help: "Admission decisions on opted-in Deployments: hold (a release starts), patch (held during a release), allow, deny.",
	}, []string{"decision"})
	memberCluster = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vane_member_cluster",
		Help: "1 for each member cluster registered by a remote Secret.",
	}, []string{"cluster"})
	memberUnreachable = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vane_member_unreachable_total",
		Help: "Reads of a release's Deployment in a member cluster that did not answer.",
	}, []string{"cluster"})
	admissionLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "vane_admission_duration_seconds",
		Help:    "Time to decide an admission review, in the handler.",
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05},
	})
)

func init() {
	crmetrics.Registry.MustRegister(phase, canaryWeight, step, stepTransitions, admissions, admissionLatency, memberCluster, memberUnreachable)
}

// Decision is the outcome of one admission review.
type Decision string

// Admission decisions.
const (
	DecisionHold  Decision = "hold"
	DecisionPatch Decision = "patch"
	DecisionAllow Decision = "allow"
	DecisionDeny  Decision = "deny"
)

// ObserveRelease records where a release stands.
func ObserveRelease(namespace, name string, st api.Status) {
	phase.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "name": name})
	phase.WithLabelValues(namespace, name, string(st.Phase)).Set(1)
	canaryWeight.WithLabelValues(namespace, name).Set(float64(st.CanaryWeight))
	step.WithLabelValues(namespace, name).Set(float64(st.CurrentStepIndex))
}

// StepsCompleted counts n completed steps of a release.
func StepsCompleted(namespace, name string, n int) {
	stepTransitions.WithLabelValues(namespace, name).Add(float64(n))
}

// ForgetRelease drops the series of a Deployment that is gone.
func ForgetRelease(namespace, name string) {
	l := prometheus.Labels{"namespace": namespace, "name": name}
	phase.DeletePartialMatch(l)
	canaryWeight.DeletePartialMatch(l)
	step.DeletePartialMatch(l)
	stepTransitions.DeletePartialMatch(l)
}

// Admission records one admission decision and how long it took.
func Admission(d Decision, took time.Duration) {
	admissions.WithLabelValues(string(d)).Inc()
	admissionLatency.Observe(took.Seconds())
}

// Members records the registered member clusters.
func Members(names []string) {
	memberCluster.Reset()
	for _, n := range names {
		memberCluster.WithLabelValues(n).Set(1)
	}
}

// MemberUnreachable counts a member cluster that did not answer.
func MemberUnreachable(cluster string) {
	memberUnreachable.WithLabelValues(cluster).Inc()
}
