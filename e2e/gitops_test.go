package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vane-io/vane/e2e/framework"
	"github.com/vane-io/vane/internal/api"
)

// gitApply applies a manifest the way Argo CD does with server-side apply:
// field manager argocd-controller, forcing conflicts. dryRun asks the server
// what it would change.
func (a *app) gitApply(manifest string, dryRun bool) *unstructured.Unstructured {
	a.t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		a.t.Fatal(err)
	}
	opts := []client.PatchOption{client.FieldOwner("argocd-controller"), client.ForceOwnership}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	if err := a.c.Client.Patch(context.Background(), u, client.Apply, opts...); err != nil { //nolint:staticcheck // client.Apply is what Argo CD's server-side apply does
		a.t.Fatalf("server-side apply: %v", err)
	}
	return u
}

// A GitOps flow with server-side apply under Argo CD's field manager: the
// version change applied from git becomes a release; re-applying the same
// manifest mid-release changes nothing; after promotion, a dry-run apply of
// the git manifest finds no difference in any field git sets.
func TestGitOpsServerSideApply(t *testing.T) {
	c := framework.Vane(t)
	a := &app{t: t, c: c, ns: c.Namespace(t), name: "dubbo3-provider"}
	vs, dr := meshYAML(a.ns)
	a.apply(vs)
	a.apply(dr)
	git := providerYAML(a.ns, 2, "- setWeight: 40\n- pause: {}\n")
	a.gitApply(git, false)
	a.waitAvailable("v1")
	a.waitAdopted("v1")

	gitV2 := strings.Replace(strings.Replace(git, "version: v1", "version: v2", 1), "provider:v0.2", "provider:v2", 1)
	a.gitApply(gitV2, false)
	st := a.waitPhase(api.PhasePaused, 30*time.Second)

	// Argo CD syncs again (same manifest) while the release waits.
	before := a.deployment()
	a.gitApply(gitV2, false)
	time.Sleep(time.Second)
	after := a.deployment()
	if !after.Spec.Paused || after.Annotations[api.AnnotationStatus] != before.Annotations[api.AnnotationStatus] {
		t.Errorf("re-applying the git manifest changed the release: paused=%v status %q → %q", after.Spec.Paused, before.Annotations[api.AnnotationStatus], after.Annotations[api.AnnotationStatus])
	}
	if got := a.status(); got.CurrentStepIndex != st.CurrentStepIndex || got.Phase != api.PhasePaused {
		t.Errorf("after the re-apply: %+v, want still paused at step %d", got, st.CurrentStepIndex)
	}
	if !cmp.Equal(after.Finalizers, before.Finalizers) || len(after.Finalizers) == 0 {
		t.Errorf("finalizers %v → %v", before.Finalizers, after.Finalizers)
	}

	// A replace of the whole object from git (kubectl replace, a forced
	// sync) sends neither the status nor spec.paused: the release keeps both.
	replaced := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(gitV2), &replaced.Object); err != nil {
		t.Fatal(err)
	}
	replaced.SetResourceVersion(a.deployment().ResourceVersion)
	replaced.SetFinalizers(after.Finalizers)
	if err := a.c.Client.Update(context.Background(), replaced); err != nil {
		t.Fatalf("replace: %v", err)
	}
	if got := a.deployment(); !got.Spec.Paused || got.Annotations[api.AnnotationStatus] != before.Annotations[api.AnnotationStatus] {
		t.Errorf("a replace from git dropped the release: paused=%v status=%q", got.Spec.Paused, got.Annotations[api.AnnotationStatus])
	}

	a.whenAction(api.ActionPromote)
	a.waitPhase(api.PhaseHealthy, 30*time.Second)
	a.waitAvailable("v2")

	// What git sets is exactly what is there: a dry-run apply changes none
	// of it (and no field manager conflicts with argocd-controller).
	live := a.deployment()
	dry := a.gitApply(gitV2, true)
	for _, path := range [][]string{
		{"spec", "replicas"}, {"spec", "template"}, {"spec", "selector"}, {"metadata", "labels"},
		{"metadata", "annotations", api.AnnotationStrategy},
	} {
		want, _, _ := unstructured.NestedFieldNoCopy(toUnstructured(t, live), path...)
		got, _, _ := unstructured.NestedFieldNoCopy(dry.Object, path...)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%v differs after the release (-live,+git):\n%s", path, diff)
		}
	}
	if live.Spec.Paused {
		t.Error("the Deployment stayed paused after the release")
	}
}
