package argocd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"

	"github.com/vane-io/vane/internal/api"
)

var dir = filepath.Join("..", "..", "manifests", "argocd")

// toLua turns decoded JSON into Lua values, as Argo CD hands objects over.
func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case map[string]any:
		t := L.NewTable()
		for k, e := range x {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, e := range x {
			t.Append(toLua(L, e))
		}
		return t
	case string:
		return lua.LString(x)
	case float64:
		return lua.LNumber(x)
	case bool:
		return lua.LBool(x)
	default:
		return lua.LNil
	}
}

func fromLua(v lua.LValue) any {
	t, ok := v.(*lua.LTable)
	if !ok {
		switch x := v.(type) {
		case lua.LString:
			return string(x)
		case lua.LNumber:
			return float64(x)
		case lua.LBool:
			return bool(x)
		}
		return nil
	}
	if t.MaxN() > 0 {
		var out []any
		t.ForEach(func(_, e lua.LValue) { out = append(out, fromLua(e)) })
		return out
	}
	out := map[string]any{}
	t.ForEach(func(k, e lua.LValue) { out[k.String()] = fromLua(e) })
	return out
}

// run runs script with the global obj and returns what it returns.
func run(t *testing.T, script string, obj map[string]any) any {
	t.Helper()
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		t.Fatalf("lua: %v", err)
	}
	return fromLua(L.Get(-1))
}

func deployment(optedIn bool, st *api.Status, paused bool, replicas, updated, available float64) map[string]any {
	labels := map[string]any{"app": "p"}
	if optedIn {
		labels[api.LabelCanary] = api.LabelCanaryEnabled
	}
	annotations := map[string]any{}
	if st != nil {
		annotations[api.AnnotationStatus] = st.Encode()
	}
	return map[string]any{
		"metadata": map[string]any{"name": "p", "generation": 2.0, "labels": labels, "annotations": annotations},
		"spec":     map[string]any{"replicas": replicas, "paused": paused, "template": map[string]any{"metadata": map[string]any{}}},
		"status":   map[string]any{"observedGeneration": 2.0, "replicas": replicas, "updatedReplicas": updated, "availableReplicas": available},
	}
}

func TestHealth(t *testing.T) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	status := func(p api.Phase, msg string) *api.Status {
		return &api.Status{Phase: p, StableVersion: "v1", CanaryVersion: "v2", Message: msg}
	}
	cases := map[string]struct {
		obj  map[string]any
		want map[string]any
	}{
		"not opted in, rolled out": {deployment(false, nil, false, 2, 2, 2), map[string]any{"status": "Healthy", "message": ""}},
		"not opted in, paused":     {deployment(false, nil, true, 2, 2, 2), map[string]any{"status": "Suspended", "message": "Deployment is paused"}},
		"not opted in, rolling":    {deployment(false, nil, false, 2, 1, 1), map[string]any{"status": "Progressing", "message": "Waiting for rollout to finish: 1 out of 2 new replicas have been updated..."}},
		"timed step: Progressing, though paused": {
			deployment(true, status(api.PhaseProgressing, "paused for 10m0s, until 2026-11-23T15:10:00Z"), true, 2, 0, 2),
			map[string]any{"status": "Progressing", "message": "vane: paused for 10m0s, until 2026-11-23T15:10:00Z"},
		},
		"manual pause: Suspended": {
			deployment(true, status(api.PhasePaused, "paused at canary weight 5% until promoted (vane.io/action=promote)"), true, 2, 0, 2),
			map[string]any{"status": "Suspended", "message": "vane: paused at canary weight 5% until promoted (vane.io/action=promote)"},
		},
		"promoting": {deployment(true, status(api.PhasePromoting, "rolling out v2 natively"), false, 2, 1, 2), map[string]any{"status": "Progressing", "message": "vane: rolling out v2 natively"}},
		"aborted: Degraded": {
			deployment(true, status(api.PhaseAborted, "aborted: all traffic on stable v1"), true, 2, 0, 2),
			map[string]any{"status": "Degraded", "message": "vane: aborted: all traffic on stable v1"},
		},
		"blocked: Degraded": {
			deployment(true, status(api.PhaseDegraded, "VirtualService demo/provider not found: referenced object missing"), true, 2, 0, 2),
			map[string]any{"status": "Degraded", "message": "vane: VirtualService demo/provider not found: referenced object missing"},
		},
		"released: the stock logic": {deployment(true, &api.Status{Phase: api.PhaseHealthy, StableVersion: "v2"}, false, 2, 2, 2), map[string]any{"status": "Healthy", "message": ""}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, run(t, string(script), tc.obj)); diff != "" {
				t.Errorf("(-want,+got):\n%s", diff)
			}
		})
	}
}

func TestActions(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(dir, "actions.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var actions struct {
		Discovery   string `json:"discovery.lua"`
		Definitions []struct {
			Name   string `json:"name"`
			Action string `json:"action.lua"`
		} `json:"definitions"`
	}
	if err := yaml.UnmarshalStrict(data, &actions); err != nil {
		t.Fatal(err)
	}
	paused := deployment(true, &api.Status{Phase: api.PhasePaused}, true, 2, 0, 2)
	got := run(t, actions.Discovery, paused)
	want := map[string]any{
		"restart": map[string]any{}, "promote": map[string]any{"disabled": false}, "promote-full": map[string]any{"disabled": false},
		"abort": map[string]any{"disabled": false}, "retry": map[string]any{"disabled": true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("discovery on a paused release (-want,+got):\n%s", diff)
	}
	if got := run(t, actions.Discovery, deployment(false, nil, false, 2, 2, 2)); !cmp.Equal(got, map[string]any{"restart": map[string]any{}}) {
		t.Errorf("discovery on a Deployment that did not opt in: %v", got)
	}
	for _, d := range actions.Definitions {
		if d.Name == "restart" {
			continue
		}
		out := run(t, d.Action, deployment(true, &api.Status{Phase: api.PhasePaused}, true, 2, 0, 2))
		b, _ := json.Marshal(out)
		var obj struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(b, &obj)
		if obj.Metadata.Annotations[api.AnnotationAction] != d.Name {
			t.Errorf("action %s set %s=%q", d.Name, api.AnnotationAction, obj.Metadata.Annotations[api.AnnotationAction])
		}
		if _, err := api.ActionFrom(obj.Metadata.Annotations); err != nil {
			t.Errorf("action %s: %v", d.Name, err)
		}
	}
}
