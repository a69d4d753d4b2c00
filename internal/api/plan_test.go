package api

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// seedStrategy is the weight strategy of the seed's rollout-provider.yaml,
// pasted unchanged with its leading canary key.
const seedStrategy = `canary:
  trafficRouting:
    istio:
      virtualService:
        name: provider
        routes:
          - test-v1
      destinationRule:
        name: dubbo-provider
        stableSubsetName: stable
        canarySubsetName: canary
  steps:
    - setWeight: 5
    - pause:
        duration: 10m
    - setWeight: 50
    - pause:
        duration: 10m
`

// seedHeaderStrategy is the header strategy of the seed's
// rollouts-legacy/v1/rollout-provider.yaml, pasted unchanged.
const seedHeaderStrategy = `canary:
  canaryService: dubbo3-provider-canary
  stableService: dubbo3-provider
  trafficRouting:
    managedRoutes:
      - name: test-v2
    istio:
      virtualService:
        name: provider
        routes:
          - test-v1
  steps:
    - setCanaryScale:
        weight: 100
    - setHeaderRoute:
        name: test-v2
        match:
        - headerName: lane
          headerValue:
            exact: test-v2
    - pause: {}
`

// seed004Strategy is seed 004's canary of bookinfo reviews (KubeVela's
// rollout trait and canary-traffic trait) in Argo's vocabulary: a batch of
// one pod with 10% of the traffic, then a person verifies and promotes.
const seed004Strategy = `canary:
  trafficRouting:
    istio:
      virtualService: {name: reviews, routes: [primary]}
      destinationRule: {name: reviews, stableSubsetName: stable, canarySubsetName: canary}
  steps:
    - setCanaryScale: {replicas: 1}
    - setWeight: 10
    - pause: {}
`

func ptr[T any](v T) *T { return &v }

func TestParsePlan(t *testing.T) {
	routing := IstioRouting{VirtualService: "provider", Routes: []string{"test-v1"}, DestinationRule: "dubbo-provider", StableSubset: "stable", CanarySubset: "canary"}
	withSteps := func(steps string) string {
		return `trafficRouting: {istio: {virtualService: {name: provider, routes: [test-v1]}, destinationRule: {name: dubbo-provider, stableSubsetName: stable, canarySubsetName: canary}}}
steps:
` + steps
	}
	managed := "trafficRouting: {managedRoutes: [{name: lane}], istio: {virtualService: {name: provider, routes: [test-v1]}, destinationRule: {name: dubbo-provider, stableSubsetName: stable, canarySubsetName: canary}}}\n"
	withManaged := routing
	withManaged.ManagedRoutes = []string{"lane"}
	cases := map[string]struct {
		strategy string
		want     *Plan
		wantErr  string // substring of the error; "" means no error
	}{
		"seed strategy with canary key": {
			strategy: seedStrategy,
			want: &Plan{Istio: routing, Steps: []Step{
				{SetWeight: ptr[int32](5)}, {Pause: &Pause{Duration: ptr(10 * time.Minute)}},
				{SetWeight: ptr[int32](50)}, {Pause: &Pause{Duration: ptr(10 * time.Minute)}},
			}},
		},
		"without canary key, indefinite pause and seconds": {
			strategy: withSteps("- setWeight: 0\n- pause: {}\n- pause: {duration: 30}\n- pause: {duration: \"45\"}\n- setWeight: 100\n"),
			want: &Plan{Istio: routing, Steps: []Step{
				{SetWeight: ptr[int32](0)}, {Pause: &Pause{}}, {Pause: &Pause{Duration: ptr(30 * time.Second)}},
				{Pause: &Pause{Duration: ptr(45 * time.Second)}}, {SetWeight: ptr[int32](100)},
			}},
		},
		"no steps": {strategy: withSteps("  []"), want: &Plan{Istio: routing}},
		"missing":  {strategy: "", wantErr: "annotation vane.io/strategy is missing"},
		"not yaml": {strategy: "steps: [", wantErr: "is not valid YAML"},
		"scalar":   {strategy: "canary", wantErr: "must be a YAML mapping"},
		"unknown field": {
			strategy: withSteps("- setWeight: 5\n  bogus: 1\n"),
			wantErr:  `unknown field "steps[0].bogus"`,
		},
		"unknown top-level field (analysis)": {
			strategy: withSteps("  []") + "\nanalysis: {templates: []}\n",
			wantErr:  `unknown field "analysis"`,
		},
		"weight above 100":  {strategy: withSteps("- setWeight: 120\n"), wantErr: "steps[0].setWeight 120 is not allowed: must be an integer from 0 to 100"},
		"negative weight":   {strategy: withSteps("- setWeight: -1\n"), wantErr: "steps[0].setWeight -1 is not allowed"},
		"fractional weight": {strategy: withSteps("- setWeight: 5.5\n"), wantErr: "steps[0].setWeight 5.5 is not allowed"},
		"bad duration":      {strategy: withSteps("- pause: {duration: 10 minutes}\n"), wantErr: `steps[0].pause.duration "10 minutes" is not a duration: use a positive Go duration such as 30s, 10m or 1h`},
		"zero duration":     {strategy: withSteps("- pause: {duration: 0s}\n"), wantErr: "steps[0].pause.duration 0s is not a duration"},
		"negative duration": {strategy: withSteps("- pause: {duration: -5}\n"), wantErr: "steps[0].pause.duration -5s is not a duration"},
		"empty step":        {strategy: withSteps("- {}\n"), wantErr: "steps[0] is empty: a step is one of setWeight"},
		"two actions":       {strategy: withSteps("- {setWeight: 5, pause: {}}\n"), wantErr: "steps[0] has more than one action"},
		"header route not managed": {
			strategy: withSteps("- setHeaderRoute: {name: x, match: [{headerName: a, headerValue: {exact: b}}]}\n"),
			wantErr:  `steps[0].setHeaderRoute.name "x" is not listed in trafficRouting.managedRoutes`,
		},
		"header route without name": {
			strategy: managed + "steps: [{setHeaderRoute: {match: []}}]",
			wantErr:  "steps[0].setHeaderRoute.name is required",
		},
		"header value with two kinds": {
			strategy: managed + "steps: [{setHeaderRoute: {name: lane, match: [{headerName: a, headerValue: {exact: b, prefix: c}}]}}]",
			wantErr:  "steps[0].setHeaderRoute.match[0].headerValue must set exactly one of exact, prefix or regex",
		},
		"header without name": {
			strategy: managed + "steps: [{setHeaderRoute: {name: lane, match: [{headerValue: {exact: b}}]}}]",
			wantErr:  "steps[0].setHeaderRoute.match[0].headerName is required",
		},
		"bad regex": {
			strategy: managed + "steps: [{setHeaderRoute: {name: lane, match: [{headerName: a, headerValue: {regex: \"(\"}}]}}]",
			wantErr:  `steps[0].setHeaderRoute.match[0].headerValue.regex "(" is not a valid RE2 regular expression`,
		},
		"canary scale with two fields": {
			strategy: withSteps("- setCanaryScale: {weight: 10, replicas: 1}\n"),
			wantErr:  "steps[0].setCanaryScale must set exactly one of weight",
		},
		"canary scale weight above 100": {
			strategy: withSteps("- setCanaryScale: {weight: 101}\n"),
			wantErr:  "steps[0].setCanaryScale.weight 101 is not allowed",
		},
		"canary scale negative replicas": {
			strategy: withSteps("- setCanaryScale: {replicas: -1}\n"),
			wantErr:  "steps[0].setCanaryScale.replicas -1 is not allowed",
		},
		"managed route repeats a route": {
			strategy: "trafficRouting: {managedRoutes: [{name: r}], istio: {virtualService: {name: v, routes: [r]}, destinationRule: {name: d, stableSubsetName: s, canarySubsetName: c}}}",
			wantErr:  `trafficRouting.managedRoutes[0].name repeats route "r"`,
		},
		"canaryService alone": {strategy: withSteps("  []") + "\ncanaryService: c\n", wantErr: "canaryService and stableService go together"},
		"same services": {
			strategy: "canaryService: s\nstableService: s\ntrafficRouting: {istio: {virtualService: {name: v, routes: [r]}}}",
			wantErr:  `canaryService and stableService must differ, both are "s"`,
		},
		"seed header strategy (host-level split)": {
			strategy: seedHeaderStrategy,
			want: &Plan{
				Istio: IstioRouting{VirtualService: "provider", Routes: []string{"test-v1"}, ManagedRoutes: []string{"test-v2"}, StableService: "dubbo3-provider", CanaryService: "dubbo3-provider-canary"},
				Steps: []Step{
					{SetCanaryScale: &CanaryScale{Weight: ptr[int32](100)}},
					{SetHeaderRoute: &HeaderRoute{Name: "test-v2", Match: []HeaderMatch{{Name: "lane", Exact: "test-v2"}}}},
					{Pause: &Pause{}},
				},
			},
		},
		"header route kinds, removal and scale variants": {
			strategy: managed + `steps:
- setHeaderRoute: {name: lane, match: [{headerName: lane, headerValue: {prefix: test}}, {headerName: user, headerValue: {regex: "^(alice|bob)$"}}]}
- setCanaryScale: {replicas: 2}
- setCanaryScale: {matchTrafficWeight: true}
- setHeaderRoute: {name: lane}
`,
			want: &Plan{Istio: withManaged, Steps: []Step{
				{SetHeaderRoute: &HeaderRoute{Name: "lane", Match: []HeaderMatch{{Name: "lane", Prefix: "test"}, {Name: "user", Regex: "^(alice|bob)$"}}}},
				{SetCanaryScale: &CanaryScale{Replicas: ptr[int32](2)}},
				{SetCanaryScale: &CanaryScale{MatchTrafficWeight: true}},
				{SetHeaderRoute: &HeaderRoute{Name: "lane"}},
			}},
		},
		"no traffic routing: a canary by replica count": {
			strategy: "steps: [{setWeight: 25}, {pause: {}}, {setCanaryScale: {replicas: 2}}]",
			want:     &Plan{Steps: []Step{{SetWeight: ptr[int32](25)}, {Pause: &Pause{}}, {SetCanaryScale: &CanaryScale{Replicas: ptr[int32](2)}}}},
		},
		"trafficRouting without istio": {strategy: "trafficRouting: {}\nsteps: []", wantErr: "trafficRouting.istio is required when trafficRouting is given"},
		"services without traffic routing": {
			strategy: "canaryService: c\nstableService: s\nsteps: []",
			wantErr:  "canaryService and stableService are used only with trafficRouting.istio",
		},
		"header route without traffic routing": {
			strategy: "steps: [{setHeaderRoute: {name: lane, match: [{headerName: a, headerValue: {exact: b}}]}}]",
			wantErr:  "steps[0].setHeaderRoute needs trafficRouting.istio with managedRoutes",
		},
		"seed 004 batch: one pod, 10% of traffic, a manual gate": {
			strategy: seed004Strategy,
			want: &Plan{
				Istio: IstioRouting{VirtualService: "reviews", Routes: []string{"primary"}, DestinationRule: "reviews", StableSubset: "stable", CanarySubset: "canary"},
				Steps: []Step{{SetCanaryScale: &CanaryScale{Replicas: ptr[int32](1)}}, {SetWeight: ptr[int32](10)}, {Pause: &Pause{}}},
			},
		},
		"batches as KubeVela and Kruise write them": {
			strategy: withSteps(`- setCanaryScale: {replicas: 1}
- pause: {}
- setCanaryScale: {replicas: "50%"}
- pause: {duration: 1m}
- setCanaryScale: {replicas: " 100 % "}
- setCanaryScale: {replicas: 0}
`),
			want: &Plan{Istio: routing, Steps: []Step{
				{SetCanaryScale: &CanaryScale{Replicas: ptr[int32](1)}}, {Pause: &Pause{}},
				{SetCanaryScale: &CanaryScale{Weight: ptr[int32](50)}}, {Pause: &Pause{Duration: ptr(time.Minute)}},
				{SetCanaryScale: &CanaryScale{Weight: ptr[int32](100)}},
				{SetCanaryScale: &CanaryScale{Replicas: ptr[int32](0)}},
			}},
		},
		"batch of 0%": {
			strategy: withSteps("- setCanaryScale: {replicas: \"0%\"}\n"),
			wantErr:  `steps[0].setCanaryScale.replicas "0%" is not allowed: a batch is a number of pods (replicas: 1) or a percentage of the Deployment's replicas from 1% to 100% (replicas: "50%")`,
		},
		"batch above 100%": {
			strategy: "steps: [{setCanaryScale: {replicas: \"150%\"}}]",
			wantErr:  `steps[0].setCanaryScale.replicas "150%" is not allowed: a batch is a number of pods`,
		},
		"batch percent not a number": {
			strategy: "steps: [{setCanaryScale: {replicas: \"half%\"}}]",
			wantErr:  `steps[0].setCanaryScale.replicas "half%" is not allowed`,
		},
		"batch as a string without percent": {
			strategy: "steps: [{setCanaryScale: {replicas: \"2\"}}]",
			wantErr:  `steps[0].setCanaryScale.replicas "2" is not allowed`,
		},
		"batch of a fraction of a pod": {
			strategy: "steps: [{setCanaryScale: {replicas: 1.5}}]",
			wantErr:  `steps[0].setCanaryScale.replicas 1.5 is not allowed: must be a whole number of pods, 0 or more, or a percentage such as "50%"`,
		},
		"batch of a list": {
			strategy: "steps: [{setCanaryScale: {replicas: [1]}}]",
			wantErr:  `steps[0].setCanaryScale.replicas [1] is not allowed`,
		},
		"no vs name": {
			strategy: "trafficRouting: {istio: {virtualService: {routes: [r]}, destinationRule: {name: d, stableSubsetName: s, canarySubsetName: c}}}",
			wantErr:  "trafficRouting.istio.virtualService.name is required",
		},
		"no routes": {
			strategy: "trafficRouting: {istio: {virtualService: {name: v}, destinationRule: {name: d, stableSubsetName: s, canarySubsetName: c}}}",
			wantErr:  "trafficRouting.istio.virtualService.routes is required",
		},
		"empty route name": {
			strategy: "trafficRouting: {istio: {virtualService: {name: v, routes: [\"\"]}, destinationRule: {name: d, stableSubsetName: s, canarySubsetName: c}}}",
			wantErr:  "trafficRouting.istio.virtualService.routes[0] is empty",
		},
		"repeated route": {
			strategy: "trafficRouting: {istio: {virtualService: {name: v, routes: [r, r]}, destinationRule: {name: d, stableSubsetName: s, canarySubsetName: c}}}",
			wantErr:  `routes[1] repeats route "r"`,
		},
		"no destination rule nor services": {
			strategy: "trafficRouting: {istio: {virtualService: {name: v, routes: [r]}}}",
			wantErr:  "trafficRouting.istio.destinationRule is required unless canaryService and stableService are given",
		},
		"no canary subset": {
			strategy: "trafficRouting: {istio: {virtualService: {name: v, routes: [r]}, destinationRule: {name: d, stableSubsetName: s}}}",
			wantErr:  "trafficRouting.istio.destinationRule.canarySubsetName is required",
		},
		"same subsets": {
			strategy: "trafficRouting: {istio: {virtualService: {name: v, routes: [r]}, destinationRule: {name: d, stableSubsetName: s, canarySubsetName: s}}}",
			wantErr:  "stableSubsetName and canarySubsetName must differ",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePlan(map[string]string{AnnotationStrategy: tc.strategy})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "annotation "+AnnotationStrategy) {
					t.Errorf("error %q does not name the annotation first", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("plan (-want,+got):\n%s", diff)
			}
		})
	}
}

func TestValidateReplicas(t *testing.T) {
	plan := func(steps ...Step) *Plan { return &Plan{Steps: steps} }
	scale := func(n int32) Step { return Step{SetCanaryScale: &CanaryScale{Replicas: &n}} }
	percent := func(p int32) Step { return Step{SetCanaryScale: &CanaryScale{Weight: &p}} }
	cases := map[string]struct {
		plan     *Plan
		replicas int32
		wantErr  string
	}{
		"a batch of one of two":            {plan: plan(scale(1), Step{Pause: &Pause{}}), replicas: 2},
		"a batch of all the replicas":      {plan: plan(scale(4)), replicas: 4},
		"a batch of zero":                  {plan: plan(scale(0)), replicas: 1},
		"percentages are not bounded here": {plan: plan(percent(100)), replicas: 1},
		"weights are not batches":          {plan: plan(Step{SetWeight: ptr[int32](100)}), replicas: 1},
		"more pods than the Deployment has": {
			plan: plan(scale(1), scale(5)), replicas: 4,
			wantErr: `annotation vane.io/strategy: steps[1].setCanaryScale.replicas 5 is more than the Deployment's spec.replicas (4): a batch is a part of the Deployment's pods, added beside them; use at most 4, or a percentage such as "50%"`,
		},
		"a Deployment scaled to zero runs no canary": {plan: plan(scale(3)), replicas: 0},
		"the first batch too large is named": {
			plan: plan(scale(3), scale(2)), replicas: 1,
			wantErr: "steps[0].setCanaryScale.replicas 3 is more than the Deployment's spec.replicas (1)",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := tc.plan.ValidateReplicas(tc.replicas)
			got := ""
			if err != nil {
				got = err.Error()
				if !errors.Is(err, ErrInvalidStrategy) {
					t.Errorf("error %v does not wrap ErrInvalidStrategy", err)
				}
			}
			if diff := cmp.Diff(tc.wantErr, got); tc.wantErr == "" && diff != "" || tc.wantErr != "" && !strings.Contains(got, tc.wantErr) {
				t.Errorf("error (-want,+got):\n%s", diff)
			}
		})
	}
}

func TestVersionLabel(t *testing.T) {
	if got := VersionLabel(nil); got != "version" {
		t.Errorf("default = %q, want version", got)
	}
	if got := VersionLabel(map[string]string{AnnotationVersionLabel: "app.kubernetes.io/version"}); got != "app.kubernetes.io/version" {
		t.Errorf("override = %q", got)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	st := &Status{Phase: PhasePaused, StableVersion: "v1", CanaryVersion: "v2", CurrentStepIndex: 1, StepCount: 4, CanaryWeight: 5, Message: "m"}
	got, err := StatusFrom(map[string]string{AnnotationStatus: st.Encode()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st, got); diff != "" {
		t.Errorf("(-want,+got):\n%s", diff)
	}
	if s, err := StatusFrom(nil); s != nil || err != nil {
		t.Errorf("absent annotation = %v, %v; want nil, nil", s, err)
	}
	if _, err := StatusFrom(map[string]string{AnnotationStatus: "{"}); err == nil {
		t.Error("bad JSON: no error")
	}
}
