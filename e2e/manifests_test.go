package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vane-io/vane/e2e/framework"
)

// The install manifests build with kustomize and are accepted by the API
// server (server-side dry run: schemas, RBAC rules, webhook configuration).
func TestManifestsApply(t *testing.T) {
	c := framework.Current(t)
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(cache, "vane", "k8s-v1.37.2", "bin", "kubectl")
	if bin := os.Getenv("VANE_BIN_DIR"); bin != "" {
		kubectl = filepath.Join(bin, "kubectl")
	}
	// Namespaced objects are dry-run into a namespace that must exist.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "vane-system"}}
	if err := c.Client.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Client.Delete(context.Background(), ns) })
	built, err := exec.Command(kubectl, "kustomize", filepath.Join(root, "manifests")).Output()
	if err != nil {
		t.Fatalf("kustomize: %v", err)
	}
	apply := exec.Command(kubectl, "--kubeconfig", c.Kubeconfig, "apply", "--dry-run=server", "-f", "-")
	apply.Stdin = strings.NewReader(string(built))
	out, err := apply.CombinedOutput()
	if err != nil {
		t.Fatalf("apply --dry-run=server: %v\n%s", err, out)
	}
	for _, want := range []string{
		"namespace/vane-system", "serviceaccount/vane", "clusterrole.rbac.authorization.k8s.io/vane",
		"deployment.apps/vane", "service/vane-webhook", "mutatingwebhookconfiguration.admissionregistration.k8s.io/vane",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dry run did not accept %s:\n%s", want, out)
		}
	}
}
