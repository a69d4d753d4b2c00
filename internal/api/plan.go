package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
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
	// It is zero when the strategy has no trafficRouting (see Routed).
	Istio IstioRouting
	// Steps run in order; after the last one the release is promoted.
	Steps []Step
	// ScaleDownDelay, for a side-by-side release (see Status.SideBySide):
	// once all traffic is on the new version, the Deployments of the old
	// one, in every cluster, are scaled to zero this long after the last
	// step. nil keeps them running. An in-place release ignores it: its old
	// pods are replaced by the native rollout.
	ScaleDownDelay *time.Duration
}

// Routed reports whether traffic is split by a mesh (trafficRouting is set).
// Without it the Service selects the stable and canary pods alike, so the
// split is the canary's share of the pods: weights become replica counts.
func (p *Plan) Routed() bool { return p.Istio.VirtualService != "" }

// IstioRouting names the VirtualService routes and the two pools of pods
// (DestinationRule subsets, or Services) that carry the stable and canary
// traffic.
type IstioRouting struct {
	VirtualService string
	// Routes are the names of the VirtualService's http routes whose
	// stable/canary weights vane sets.
	Routes []string
	// ManagedRoutes are the names of the http routes vane adds and removes
	// (setHeaderRoute), placed before Routes.
	ManagedRoutes []string
	// DestinationRule and its subsets, for a split by subset. Empty for a
	// split by host.
	DestinationRule string
	StableSubset    string
	CanarySubset    string
	// StableService and CanaryService, for a split by host: vane pins their
	// selectors to the stable and canary versions. Empty when not given.
	StableService string
	CanaryService string
}

// BySubset reports whether traffic is split by DestinationRule subsets
// (otherwise by the hosts of StableService and CanaryService).
func (r IstioRouting) BySubset() bool { return r.DestinationRule != "" }

// Step is one step of a release: exactly one of its fields is set.
type Step struct {
	// SetWeight sends this percentage of the routes' traffic to the canary.
	SetWeight *int32
	// Pause holds the release at the current weight.
	Pause *Pause
	// SetCanaryScale sizes the canary independently of its weight.
	SetCanaryScale *CanaryScale
	// SetHeaderRoute adds, changes or (with no Match) removes a managed
	// route that sends matching requests to the canary.
	SetHeaderRoute *HeaderRoute
}

// Pause holds a release. A nil Duration waits until a person promotes it.
type Pause struct {
	Duration *time.Duration
}

// CanaryScale sizes the canary: exactly one field is set.
type CanaryScale struct {
	// Weight is a percentage of the Deployment's replicas, rounded up. A
	// batch written `replicas: "50%"` is parsed into Weight too.
	Weight *int32
	// Replicas is a number of pods.
	Replicas *int32
	// MatchTrafficWeight returns to sizing the canary by its traffic weight.
	MatchTrafficWeight bool
}

// HeaderRoute is a managed route matching requests by headers (all of
// Match) and sending them to the canary. No Match removes the route.
type HeaderRoute struct {
	Name  string
	Match []HeaderMatch
}

// HeaderMatch matches one request header; exactly one of Exact, Prefix and
// Regex (RE2, as Envoy uses) is set.
type HeaderMatch struct {
	Name   string
	Exact  string
	Prefix string
	Regex  string
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
	CanaryService  string             `json:"canaryService"`
	StableService  string             `json:"stableService"`
	// ScaleDownDelaySeconds is Argo Rollouts' delay before the old version
	// is scaled down; vane uses it for side-by-side releases only.
	ScaleDownDelaySeconds *int32 `json:"scaleDownDelaySeconds"`
}

type rawTrafficRouting struct {
	Istio         *rawIstio         `json:"istio"`
	ManagedRoutes []rawManagedRoute `json:"managedRoutes"`
}

type rawManagedRoute struct {
	Name string `json:"name"`
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
	SetWeight      *json.Number       `json:"setWeight"`
	Pause          *rawPause          `json:"pause"`
	SetCanaryScale *rawCanaryScale    `json:"setCanaryScale"`
	SetHeaderRoute *rawSetHeaderRoute `json:"setHeaderRoute"`
}

type rawPause struct {
	Duration *json.RawMessage `json:"duration"`
}

type rawCanaryScale struct {
	Weight *json.Number `json:"weight"`
	// Replicas is a number of pods or a percentage string ("50%"), as
	// KubeVela and Kruise write batches.
	Replicas           *json.RawMessage `json:"replicas"`
	MatchTrafficWeight bool             `json:"matchTrafficWeight"`
}

type rawSetHeaderRoute struct {
	Name  string           `json:"name"`
	Match []rawHeaderMatch `json:"match"`
}

type rawHeaderMatch struct {
	HeaderName  string          `json:"headerName"`
	HeaderValue *rawStringMatch `json:"headerValue"`
}

type rawStringMatch struct {
	Exact  string `json:"exact"`
	Prefix string `json:"prefix"`
	Regex  string `json:"regex"`
}

// ParsePlan decodes and validates the strategy annotation. Every error names
// the annotation, the field and the accepted form, so it can be returned to
// the user at admission as it is.
func ParsePlan(annotations map[string]string) (*Plan, error) {
	text, ok := annotations[AnnotationStrategy]
	if !ok || strings.TrimSpace(text) == "" {
		return nil, fieldErr("", "is missing; set it to the Argo Rollouts canary strategy as YAML (steps, and trafficRouting.istio for a split by a mesh)")
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
		return nil, fieldErr("", "has %s; accepted fields are canaryService, stableService, scaleDownDelaySeconds, trafficRouting.{istio{virtualService{name,routes},destinationRule{name,stableSubsetName,canarySubsetName}},managedRoutes[].name} and steps[].{setWeight,pause{duration},setCanaryScale{weight|replicas (a number or \"50%%\")|matchTrafficWeight},setHeaderRoute{name,match[]{headerName,headerValue{exact|prefix|regex}}}}", strings.Join(msgs, "; "))
	}
	return &raw, nil
}

func (r *rawCanary) validate() (*Plan, error) {
	p := &Plan{}
	if err := r.validateRouting(&p.Istio); err != nil {
		return nil, err
	}
	for i, s := range r.Steps {
		step, err := s.validate(fmt.Sprintf("steps[%d]", i), p.Istio.ManagedRoutes, p.Routed())
		if err != nil {
			return nil, err
		}
		p.Steps = append(p.Steps, step)
	}
	if n := r.ScaleDownDelaySeconds; n != nil {
		if *n < 0 {
			return nil, fieldErr("scaleDownDelaySeconds", "is %d; use a number of seconds ≥ 0 (side-by-side releases scale the old version's Deployments to zero that long after the last step)", *n)
		}
		d := time.Duration(*n) * time.Second
		p.ScaleDownDelay = &d
	}
	return p, nil
}

// validateRouting checks trafficRouting and the Services. Without
// trafficRouting the release splits by pod counts (Argo's basic canary);
// Services then have nothing to pin, as no mesh tells them apart.
func (r *rawCanary) validateRouting(out *IstioRouting) error {
	if r.TrafficRouting != nil {
		if err := r.TrafficRouting.validate(out); err != nil {
			return err
		}
		return r.validateServices(out)
	}
	if r.CanaryService != "" || r.StableService != "" {
		return fieldErr("canaryService", "and stableService are used only with trafficRouting.istio (a split by host); without trafficRouting the Deployment's own Service selects stable and canary pods alike, so leave them out")
	}
	return nil
}

// validateServices checks the host-level split: both Services or none, and
// at least one way to tell stable from canary.
func (r *rawCanary) validateServices(out *IstioRouting) error {
	switch {
	case (r.CanaryService == "") != (r.StableService == ""):
		return fieldErr("canaryService", "and stableService go together: name both Services (a host-level split) or neither")
	case r.CanaryService != "" && r.CanaryService == r.StableService:
		return fieldErr("canaryService", "and stableService must differ, both are %q", r.CanaryService)
	case r.CanaryService == "" && !out.BySubset():
		return fieldErr("trafficRouting.istio.destinationRule", "is required unless canaryService and stableService are given: {name, stableSubsetName, canarySubsetName}")
	}
	out.CanaryService, out.StableService = r.CanaryService, r.StableService
	return nil
}

func (t *rawTrafficRouting) validate(out *IstioRouting) error {
	if t.Istio == nil {
		return fieldErr("trafficRouting.istio", "is required when trafficRouting is given: name the virtualService and a destinationRule or canaryService/stableService (or leave trafficRouting out for a canary by replica count, without a mesh)")
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
		if err := uniqueName(fmt.Sprintf("trafficRouting.istio.virtualService.routes[%d]", i), name, seen); err != nil {
			return err
		}
	}
	out.VirtualService, out.Routes = vs.Name, vs.Routes
	for i, m := range t.ManagedRoutes {
		if err := uniqueName(fmt.Sprintf("trafficRouting.managedRoutes[%d].name", i), m.Name, seen); err != nil {
			return err
		}
		out.ManagedRoutes = append(out.ManagedRoutes, m.Name)
	}
	if dr == nil {
		return nil
	}
	for _, f := range []struct{ name, value string }{{"name", dr.Name}, {"stableSubsetName", dr.StableSubsetName}, {"canarySubsetName", dr.CanarySubsetName}} {
		if f.value == "" {
			return fieldErr("trafficRouting.istio.destinationRule."+f.name, "is required")
		}
	}
	if dr.StableSubsetName == dr.CanarySubsetName {
		return fieldErr("trafficRouting.istio.destinationRule", "stableSubsetName and canarySubsetName must differ, both are %q", dr.StableSubsetName)
	}
	out.DestinationRule, out.StableSubset, out.CanarySubset = dr.Name, dr.StableSubsetName, dr.CanarySubsetName
	return nil
}

// uniqueName checks a route name: not empty, not seen before among the
// routes and managed routes.
func uniqueName(path, name string, seen map[string]bool) error {
	if name == "" {
		return fieldErr(path, "is empty: give the name of an http route of the VirtualService")
	}
	if seen[name] {
		return fieldErr(path, "repeats route %q: name each route once, in routes or in managedRoutes", name)
	}
	seen[name] = true
	return nil
}

func (s rawStep) validate(path string, managed []string, routed bool) (Step, error) {
	set := 0
	for _, present := range []bool{s.SetWeight != nil, s.Pause != nil, s.SetCanaryScale != nil, s.SetHeaderRoute != nil} {
		if present {
			set++
		}
	}
	switch {
	case set == 0:
		return Step{}, fieldErr(path, "is empty: a step is one of setWeight: <0-100>, pause: {duration: 10m}, pause: {}, setCanaryScale: {...} or setHeaderRoute: {...}")
	case set > 1:
		return Step{}, fieldErr(path, "has more than one action: give each of setWeight, pause, setCanaryScale and setHeaderRoute its own step")
	case s.SetWeight != nil:
		w, err := percent(path+".setWeight", s.SetWeight)
		return Step{SetWeight: w}, err
	case s.Pause != nil:
		d, err := s.Pause.duration(path + ".pause.duration")
		return Step{Pause: &Pause{Duration: d}}, err
	case s.SetCanaryScale != nil:
		cs, err := s.SetCanaryScale.validate(path + ".setCanaryScale")
		return Step{SetCanaryScale: cs}, err
	case !routed:
		return Step{}, fieldErr(path+".setHeaderRoute", "needs trafficRouting.istio with managedRoutes: without a mesh nothing can route requests by header")
	default:
		hr, err := s.SetHeaderRoute.validate(path+".setHeaderRoute", managed)
		return Step{SetHeaderRoute: hr}, err
	}
}

func percent(path string, n *json.Number) (*int32, error) {
	w, err := strconv.ParseInt(n.String(), 10, 32)
	if err != nil || w < 0 || w > 100 {
		return nil, fieldErr(path, "%s is not allowed: must be an integer from 0 to 100", n.String())
	}
	w32 := int32(w)
	return &w32, nil
}

func (c *rawCanaryScale) validate(path string) (*CanaryScale, error) {
	set := 0
	for _, present := range []bool{c.Weight != nil, c.Replicas != nil, c.MatchTrafficWeight} {
		if present {
			set++
		}
	}
	if set != 1 {
		return nil, fieldErr(path, "must set exactly one of weight: <0-100> (percent of the Deployment's replicas), replicas: <n> or \"<1-100>%%\", or matchTrafficWeight: true")
	}
	switch {
	case c.Weight != nil:
		w, err := percent(path+".weight", c.Weight)
		return &CanaryScale{Weight: w}, err
	case c.Replicas != nil:
		return batch(path+".replicas", *c.Replicas)
	default:
		return &CanaryScale{MatchTrafficWeight: true}, nil
	}
}

// batch reads setCanaryScale.replicas: a whole number of pods, or a
// percentage of the Deployment's replicas as KubeVela and Kruise write
// batches ("50%"). A batch of 0% releases nothing and above 100% has more
// pods than the Deployment: both are mistakes worth a denial. A count of 0
// stays allowed: Argo uses it to scale the canary down on purpose.
func batch(path string, raw json.RawMessage) (*CanaryScale, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		digits, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
		p, err := strconv.ParseInt(strings.TrimSpace(digits), 10, 32)
		if !ok || err != nil || p < 1 || p > 100 {
			return nil, fieldErr(path, "%q is not allowed: a batch is a number of pods (replicas: 1) or a percentage of the Deployment's replicas from 1%% to 100%% (replicas: \"50%%\")", s)
		}
		p32 := int32(p)
		return &CanaryScale{Weight: &p32}, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 32)
	if err != nil || n < 0 {
		return nil, fieldErr(path, "%s is not allowed: must be a whole number of pods, 0 or more, or a percentage such as \"50%%\"", raw)
	}
	n32 := int32(n)
	return &CanaryScale{Replicas: &n32}, nil
}

// ValidateReplicas checks the plan against the size of the Deployment it
// runs on: a setCanaryScale batch never asks for more canary pods than the
// Deployment has. Percentages are bounded at parse time. A Deployment
// scaled to zero runs no canary (its edits roll out natively), so it has no
// bound to check.
func (p *Plan) ValidateReplicas(replicas int32) error {
	if replicas == 0 {
		return nil
	}
	for i, s := range p.Steps {
		if c := s.SetCanaryScale; c != nil && c.Replicas != nil && *c.Replicas > replicas {
			return fieldErr(fmt.Sprintf("steps[%d].setCanaryScale.replicas", i), "%d is more than the Deployment's spec.replicas (%d): a batch is a part of the Deployment's pods, added beside them; use at most %d, or a percentage such as \"50%%\"", *c.Replicas, replicas, replicas)
		}
	}
	return nil
}

func (h *rawSetHeaderRoute) validate(path string, managed []string) (*HeaderRoute, error) {
	if h.Name == "" {
		return nil, fieldErr(path+".name", "is required: the name of a route listed in trafficRouting.managedRoutes")
	}
	if !slices.Contains(managed, h.Name) {
		return nil, fieldErr(path+".name", "%q is not listed in trafficRouting.managedRoutes: add {name: %s} there", h.Name, h.Name)
	}
	out := &HeaderRoute{Name: h.Name}
	for i, m := range h.Match {
		mp := fmt.Sprintf("%s.match[%d]", path, i)
		if m.HeaderName == "" {
			return nil, fieldErr(mp+".headerName", "is required")
		}
		v := m.HeaderValue
		if v == nil || countSet(v.Exact, v.Prefix, v.Regex) != 1 {
			return nil, fieldErr(mp+".headerValue", "must set exactly one of exact, prefix or regex, e.g. {exact: test-v2}")
		}
		if v.Regex != "" {
			if _, err := regexp.Compile(v.Regex); err != nil {
				return nil, fieldErr(mp+".headerValue.regex", "%q is not a valid RE2 regular expression: %v", v.Regex, err)
			}
		}
		out.Match = append(out.Match, HeaderMatch{Name: m.HeaderName, Exact: v.Exact, Prefix: v.Prefix, Regex: v.Regex})
	}
	return out, nil
}

func countSet(values ...string) int {
	n := 0
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	return n
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

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
