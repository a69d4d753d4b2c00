package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Plan is a parsed, validated AnnotationStrategy: where traffic is routed and
// the steps of a release.
type Plan struct {
	// Istio names the mesh objects whose routes and subsets vane rewrites.
	Istio IstioRouting
	// Steps run in order; after the last one the release is promoted.
	Steps []Step
}

// IstioRouting names the VirtualService routes and DestinationRule subsets
// that carry the stable and canary traffic.
type IstioRouting struct {
	VirtualService string
	// Routes are the names of the VirtualService's http routes whose
	// stable/canary weights vane sets.
	Routes          []string
	DestinationRule string
	StableSubset    string
	CanarySubset    string
}

// Step is one step of a release: exactly one of its fields is set.
type Step struct {
	// SetWeight sends this percentage of the routes' traffic to the canary.
	SetWeight *int32
	// Pause holds the release at the current weight.
	Pause *Pause
}

// Pause holds a release. A nil Duration waits until a person promotes it.
type Pause struct {
	Duration *time.Duration
}

// VersionLabel returns the pod-template label key whose change starts a
// release for a Deployment with these annotations.
func VersionLabel(annotations map[string]string) string {
	if k := annotations[AnnotationVersionLabel]; k != "" {
		return k
	}
	return DefaultVersionLabel
}

// The wire shape of the strategy annotation: Argo Rollouts' canary strategy.
// Fields vane does not implement yet are decoded so they can be refused by
// name rather than reported as unknown.
type rawCanary struct {
	TrafficRouting *rawTrafficRouting `json:"trafficRouting"`
	Steps          []rawStep          `json:"steps"`
	CanaryService  *string            `json:"canaryService"`
	StableService  *string            `json:"stableService"`
}

type rawTrafficRouting struct {
	Istio         *rawIstio `json:"istio"`
	ManagedRoutes any       `json:"managedRoutes"`
}

type rawIstio struct {
	VirtualService  *rawVirtualService  `json:"virtualService"`
	DestinationRule *rawDestinationRule `json:"destinationRule"`
}

type rawVirtualService struct {
	Name   string   `json:"name"`
	Routes []string `json:"routes"`
}

type rawDestinationRule struct {
	Name             string `json:"name"`
	StableSubsetName string `json:"stableSubsetName"`
	CanarySubsetName string `json:"canarySubsetName"`
}

type rawStep struct {
	SetWeight      *json.Number `json:"setWeight"`
	Pause          *rawPause    `json:"pause"`
	SetCanaryScale any          `json:"setCanaryScale"`
	SetHeaderRoute any          `json:"setHeaderRoute"`
}

type rawPause struct {
	Duration *json.RawMessage `json:"duration"`
}

// ParsePlan decodes and validates the strategy annotation. Every error names
// the annotation, the field and the accepted form, so it can be returned to
// the user at admission as it is.
func ParsePlan(annotations map[string]string) (*Plan, error) {
	text, ok := annotations[AnnotationStrategy]
	if !ok || strings.TrimSpace(text) == "" {
		return nil, fieldErr("", "is missing; set it to the Argo Rollouts canary strategy as YAML (trafficRouting.istio and steps)")
	}
	raw, err := decodeStrict(text)
	if err != nil {
		return nil, err
	}
	return raw.validate()
}

func decodeStrict(text string) (*rawCanary, error) {
	data, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		return nil, fieldErr("", "is not valid YAML: %v", err)
	}
	// Accept the block with or without its leading `canary:` key, as pasted
	// from a Rollout's spec.strategy.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fieldErr("", "must be a YAML mapping (the Argo Rollouts canary strategy), got: %s", firstLine(text))
	}
	if inner, ok := top["canary"]; ok && len(top) == 1 {
		data = inner
	}
	var raw rawCanary
	strict, err := sigsjson.UnmarshalStrict(data, &raw, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, fieldErr("", "cannot be decoded: %v", err)
	}
	if len(strict) > 0 {
		msgs := make([]string, 0, len(strict))
		for _, e := range strict {
			msgs = append(msgs, e.Error())
		}
		return nil, fieldErr("", "has %s; accepted fields are trafficRouting.istio.{virtualService{name,routes},destinationRule{name,stableSubsetName,canarySubsetName}} and steps[].{setWeight,pause{duration}}", strings.Join(msgs, "; "))
	}
	return &raw, nil
}

func (r *rawCanary) validate() (*Plan, error) {
	if r.CanaryService != nil {
		return nil, notYet("canaryService")
	}
	if r.StableService != nil {
		return nil, notYet("stableService")
	}
	p := &Plan{}
	if err := r.TrafficRouting.validate(&p.Istio); err != nil {
		return nil, err
	}
	for i, s := range r.Steps {
		step, err := s.validate(fmt.Sprintf("steps[%d]", i))
		if err != nil {
			return nil, err
		}
		p.Steps = append(p.Steps, step)
	}
	return p, nil
}

func (t *rawTrafficRouting) validate(out *IstioRouting) error {
	if t == nil || t.Istio == nil {
		return fieldErr("trafficRouting.istio", "is required: name the virtualService and destinationRule (a release without a mesh is not supported yet)")
	}
	if t.ManagedRoutes != nil {
		return notYet("trafficRouting.managedRoutes")
	}
	vs, dr := t.Istio.VirtualService, t.Istio.DestinationRule
	if vs == nil || vs.Name == "" {
		return fieldErr("trafficRouting.istio.virtualService.name", "is required: the VirtualService in the Deployment's namespace")
	}
	if len(vs.Routes) == 0 {
		return fieldErr("trafficRouting.istio.virtualService.routes", "is required: a list of the names of the http routes to shift, e.g. [primary]")
	}
	seen := map[string]bool{}
	for i, name := range vs.Routes {
		if name == "" {
			return fieldErr(fmt.Sprintf("trafficRouting.istio.virtualService.routes[%d]", i), "is empty: give the name of an http route of the VirtualService")
		}
		if seen[name] {
			return fieldErr(fmt.Sprintf("trafficRouting.istio.virtualService.routes[%d]", i), "repeats route %q: name each route once", name)
		}
		seen[name] = true
	}
	if dr == nil {
		return fieldErr("trafficRouting.istio.destinationRule", "is required: {name, stableSubsetName, canarySubsetName} (a host-level split with canaryService/stableService is not supported yet)")
	}
	for _, f := range []struct{ name, value string }{{"name", dr.Name}, {"stableSubsetName", dr.StableSubsetName}, {"canarySubsetName", dr.CanarySubsetName}} {
		if f.value == "" {
			return fieldErr("trafficRouting.istio.destinationRule."+f.name, "is required")
		}
	}
	if dr.StableSubsetName == dr.CanarySubsetName {
		return fieldErr("trafficRouting.istio.destinationRule", "stableSubsetName and canarySubsetName must differ, both are %q", dr.StableSubsetName)
	}
	*out = IstioRouting{
		VirtualService:  vs.Name,
		Routes:          vs.Routes,
		DestinationRule: dr.Name,
		StableSubset:    dr.StableSubsetName,
		CanarySubset:    dr.CanarySubsetName,
	}
	return nil
}

func (s rawStep) validate(path string) (Step, error) {
	switch {
	case s.SetCanaryScale != nil:
		return Step{}, notYet(path + ".setCanaryScale")
	case s.SetHeaderRoute != nil:
		return Step{}, notYet(path + ".setHeaderRoute")
	case s.SetWeight != nil && s.Pause != nil:
		return Step{}, fieldErr(path, "has both setWeight and pause: give each its own step")
	case s.SetWeight != nil:
		w, err := strconv.ParseInt(s.SetWeight.String(), 10, 32)
		if err != nil || w < 0 || w > 100 {
			return Step{}, fieldErr(path+".setWeight", "%s is not allowed: must be an integer from 0 to 100", s.SetWeight.String())
		}
		w32 := int32(w)
		return Step{SetWeight: &w32}, nil
	case s.Pause != nil:
		d, err := s.Pause.duration(path + ".pause.duration")
		if err != nil {
			return Step{}, err
		}
		return Step{Pause: &Pause{Duration: d}}, nil
	default:
		return Step{}, fieldErr(path, "is empty: a step is one of setWeight: <0-100>, pause: {duration: 10m} or pause: {}")
	}
}

// duration accepts what Argo Rollouts accepts: a Go duration string ("30s",
// "10m", "1h") or a whole number of seconds. No duration means wait for a
// person.
func (p rawPause) duration(path string) (*time.Duration, error) {
	if p.Duration == nil || string(*p.Duration) == "null" {
		return nil, nil
	}
	bad := func(v string) error {
		return fieldErr(path, "%s is not a duration: use a positive Go duration such as 30s, 10m or 1h, a number of seconds, or pause: {} to wait for a person", v)
	}
	var d time.Duration
	var s string
	var n json.Number
	switch {
	case json.Unmarshal(*p.Duration, &s) == nil:
		parsed, err := time.ParseDuration(s)
		if err != nil {
			if secs, nerr := strconv.ParseInt(s, 10, 64); nerr == nil {
				parsed, err = time.Duration(secs)*time.Second, nil
			}
		}
		if err != nil {
			return nil, bad(strconv.Quote(s))
		}
		d = parsed
	case json.Unmarshal(*p.Duration, &n) == nil:
		secs, err := n.Int64()
		if err != nil {
			return nil, bad(n.String())
		}
		d = time.Duration(secs) * time.Second
	default:
		return nil, bad(string(*p.Duration))
	}
	if d <= 0 {
		return nil, bad(d.String())
	}
	return &d, nil
}

// ErrInvalidStrategy is wrapped by every error ParsePlan returns.
var ErrInvalidStrategy = errors.New("invalid strategy")

type strategyError struct{ msg string }

func (e *strategyError) Error() string { return e.msg }
func (e *strategyError) Unwrap() error { return ErrInvalidStrategy }

func fieldErr(field, format string, args ...any) error {
	where := "annotation " + AnnotationStrategy
	if field != "" {
		where += ": " + field
	}
	return &strategyError{msg: where + " " + fmt.Sprintf(format, args...)}
}

func notYet(field string) error {
	return fieldErr(field, "is not supported yet; remove it (supported: trafficRouting.istio with virtualService and destinationRule, steps setWeight and pause)")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
