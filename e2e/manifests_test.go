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
	// Namespaced objects are dry-run into a namespace that must exist. It
	// stays: vane itself runs with the ServiceAccount in it (hack/vane.sh).
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "vane-system"}}
	if err := c.Client.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	built, err := exec.Command(kubectl, "kustomize", filepath.Join(root, "manifests")).Output()
	if err != nil {
		t.Fatalf("kustomize: %v", err)
	}
	// The cert-manager overlay builds too (its CRDs are not on this
	// cluster, so it is not applied).
	overlay, err := exec.Command(kubectl, "kustomize", filepath.Join(root, "manifests", "overlays", "cert-manager")).Output()
	if err != nil || !strings.Contains(string(overlay), "cert-manager.io/inject-ca-from: vane-system/vane-webhook") {
		t.Errorf("kustomize the cert-manager overlay: %v", err)
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
		"poddisruptionbudget.policy/vane", "role.rbac.authorization.k8s.io/vane",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dry run did not accept %s:\n%s", want, out)
		}
	}
}

// vane runs in the e2e suite with the token of manifests' ServiceAccount, so
// every test exercises exactly the RBAC of manifests/base/rbac.yaml.
func TestVaneRunsAsTheManifestsServiceAccount(t *testing.T) {
	c := framework.Vane(t)
	log := framework.VaneLog()
	kubeconfig := filepath.Join(filepath.Dir(filepath.Dir(log)), "vane.kubeconfig")
	cache, _ := os.UserCacheDir()
	kubectl := filepath.Join(cache, "vane", "k8s-v1.37.2", "bin", "kubectl")
	out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput()
	if err != nil {
		t.Fatalf("auth whoami: %v\n%s", err, out)
	}
	if got := string(out); got != "system:serviceaccount:vane-system:vane" {
		t.Errorf("vane runs as %q, want the ServiceAccount vane-system/vane", got)
	}
	// And it may not do what it does not need: read Secrets of other
	// namespaces, or change Pods.
	for _, verb := range [][]string{{"get", "secrets", "-n", "default"}, {"delete", "pods", "-n", "default"}, {"update", "deployments", "--subresource=scale", "-n", "default"}} {
		out, _ := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig, "auth", "can-i"}, verb...)...).CombinedOutput()
		if strings.TrimSpace(string(out)) != "no" {
			t.Errorf("vane can %v: %s", verb, out)
		}
	}
	_ = c
}
