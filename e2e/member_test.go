package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vane-io/vane/e2e/framework"
)

// memberName is the member cluster these tests start beside the primary.
const memberName = "b"

// badStrategyProbe is an opted-in Deployment whose strategy vane denies with
// "annotation vane.io/strategy ..." (the probe hack/vane.sh uses).
func badStrategyProbe(ns string) *appsv1.Deployment {
	d := newDeployment(ns, "vane-probe", "probe", 1, map[string]string{"vane.io/canary": "enabled"})
	d.Annotations = map[string]string{"vane.io/strategy": "probe: true"}
	return d
}

// dryRunProbe creates badStrategyProbe in c with a server-side dry run and
// returns the error (nil: admitted).
func dryRunProbe(c *framework.Cluster, ns string) error {
	return c.Client.Create(context.Background(), badStrategyProbe(ns), client.DryRunAll)
}

// whenMemberHasNoWebhook removes the member's webhook configuration, so the
// member starts out as a cluster vane has never seen (AddMember applies it).
func whenMemberHasNoWebhook(t *testing.T, m *framework.Cluster) {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "vane"}}
	if err := m.Client.Delete(context.Background(), mwc); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

// memberKubeconfig reads the registration Secret of m in the primary and
// checks its shape: the label, the annotation and the one key that
// `istioctl create-remote-secret --name <m.Name>` writes.
func memberKubeconfig(t *testing.T, c, m *framework.Cluster) []byte {
	t.Helper()
	s := &corev1.Secret{}
	key := client.ObjectKey{Namespace: "vane-system", Name: framework.MemberSecretName(m)}
	if err := c.Client.Get(context.Background(), key, s); err != nil {
		t.Fatalf("registration Secret %s: %v", key, err)
	}
	if got := s.Labels["istio/multiCluster"]; got != "true" {
		t.Errorf("label istio/multiCluster = %q, want \"true\"", got)
	}
	if got := s.Annotations["networking.istio.io/cluster"]; got != m.Name {
		t.Errorf("annotation networking.istio.io/cluster = %q, want %q", got, m.Name)
	}
	if len(s.Data) != 1 || s.Data[m.Name] == nil {
		t.Fatalf("Secret keys = %v, want exactly [%s]", keys(s.Data), m.Name)
	}
	if _, ok := s.Annotations["kubectl.kubernetes.io/last-applied-configuration"]; ok {
		t.Error("the token is copied into the last-applied-configuration annotation")
	}
	return s.Data[m.Name]
}

func keys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// canI asks m's API server, as the user of cs, whether it may do verb on
// resource (SelfSubjectAccessReview, as `kubectl auth can-i`).
func canI(t *testing.T, cs kubernetes.Interface, verb, group, resource, ns, name string) bool {
	t.Helper()
	r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: verb, Group: group, Resource: resource, Namespace: ns, Name: name,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectAccessReview %s %s: %v", verb, resource, err)
	}
	return r.Status.Allowed
}

// Two control planes run side by side; AddMember registers the member as
// `istioctl create-remote-secret` would, with a least-privilege identity,
// and the member's webhook calls the primary's vane.
func TestMemberRegistration(t *testing.T) {
	c := framework.Vane(t)
	m := framework.StartMember(t, memberName)

	// Given two clusters: the member is another API server with its own data.
	if m.Name != memberName || c.Name != "" {
		t.Fatalf("names: primary %q, member %q", c.Name, m.Name)
	}
	if m.RESTConfig.Host == c.RESTConfig.Host {
		t.Fatalf("the member shares the primary's API server %s", c.RESTConfig.Host)
	}
	raw, err := clientcmd.LoadFromFile(m.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if raw.CurrentContext != memberName || raw.Contexts[memberName].Cluster != memberName {
		t.Errorf("member kubeconfig: current context %q, want context and cluster %q", raw.CurrentContext, memberName)
	}
	ns := m.Namespace(t)
	if _, err := c.Clientset.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace %s of the member in the primary: %v, want NotFound", ns, err)
	}
	whenMemberHasNoWebhook(t, m)
	if err := dryRunProbe(m, ns); err != nil {
		t.Fatalf("before AddMember, the member admits a bad strategy unchecked; got %v", err)
	}
	existing := newDeployment(ns, "existing", "app:v1", 1, nil)
	if err := m.Client.Create(context.Background(), existing); err != nil {
		t.Fatal(err)
	}

	// When the member is added.
	framework.AddMember(t, m)

	// Then the primary holds its kubeconfig, for the member's API server...
	cfg, err := clientcmd.RESTConfigFromKubeConfig(memberKubeconfig(t, c, m))
	if err != nil {
		t.Fatalf("the Secret's kubeconfig: %v", err)
	}
	if cfg.Host != m.RESTConfig.Host {
		t.Errorf("kubeconfig server = %s, want the member's %s", cfg.Host, m.RESTConfig.Host)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// ...whose identity lists Deployments there,
	ds, err := cs.AppsV1().Deployments(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(ds.Items) != 1 || ds.Items[0].Name != "existing" {
		t.Fatalf("list Deployments in the member as vane-remote: %v %v", err, ds)
	}
	// ...may do what vane does, and nothing else.
	for _, tc := range []struct {
		verb, group, resource, ns, name string
		want                            bool
	}{
		{"list", "apps", "deployments", "", "", true},
		{"watch", "apps", "deployments", "", "", true},
		{"patch", "apps", "deployments", ns, "existing", true},
		{"create", "events.k8s.io", "events", ns, "", true},
		{"update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "vane", true},
		{"get", "", "secrets", ns, "", false},
		{"list", "", "secrets", "", "", false},
		{"get", "", "secrets", "vane-system", "vane-remote-token", false},
		{"create", "", "pods", ns, "", false},
		{"update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "other", false},
		{"list", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", false},
	} {
		if got := canI(t, cs, tc.verb, tc.group, tc.resource, tc.ns, tc.name); got != tc.want {
			t.Errorf("can-i %s %s.%s %s/%s = %v, want %v", tc.verb, tc.resource, tc.group, tc.ns, tc.name, got, tc.want)
		}
	}
	// A cache of the webhook configuration works when it selects the name.
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(context.Background(),
		metav1.ListOptions{FieldSelector: "metadata.name=vane"}); err != nil {
		t.Errorf("list the webhook configuration vane by field selector: %v", err)
	}

	// And the member's webhook calls the primary's vane, with its CA.
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := m.Client.Get(context.Background(), client.ObjectKey{Name: "vane"}, mwc); err != nil {
		t.Fatal(err)
	}
	if got, want := *mwc.Webhooks[0].ClientConfig.URL, "https://"+framework.VaneWebhookAddr()+"/mutate-apps-v1-deployment"; got != want {
		t.Errorf("member webhook URL = %s, want %s", got, want)
	}
	if got, want := string(mwc.Webhooks[0].ClientConfig.CABundle), caBundle(t, c.Client); got != want {
		t.Errorf("member caBundle differs from the primary's")
	}
	err = dryRunProbe(m, ns)
	if err == nil || !strings.Contains(err.Error(), "annotation vane.io/strategy") {
		t.Fatalf("dry-run create of a bad strategy in the member: %v, want denied by vane (annotation vane.io/strategy)", err)
	}

	// vane itself reads the Secrets of its namespace, no others.
	vaneCfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(filepath.Dir(filepath.Dir(framework.VaneLog())), "vane.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	vaneCS, err := kubernetes.NewForConfig(vaneCfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		verb, ns string
		want     bool
	}{{"list", "vane-system", true}, {"watch", "vane-system", true}, {"get", "vane-system", true}, {"list", ns, false}, {"list", "", false}} {
		if got := canI(t, vaneCS, tc.verb, "", "secrets", tc.ns, ""); got != tc.want {
			t.Errorf("vane can-i %s secrets in %q = %v, want %v", tc.verb, tc.ns, got, tc.want)
		}
	}

	// When it is removed, the Secret is gone.
	framework.RemoveMember(t, m)
	s := &corev1.Secret{}
	err = c.Client.Get(context.Background(), client.ObjectKey{Namespace: "vane-system", Name: framework.MemberSecretName(m)}, s)
	if !apierrors.IsNotFound(err) {
		t.Errorf("registration Secret after RemoveMember: %v, want NotFound", err)
	}
}

// A member's API server stops (unreachable, the rest of the cluster and the
// primary untouched) and comes back with its data.
func TestMemberAPIServerStopStart(t *testing.T) {
	c := framework.Current(t)
	m := framework.StartMember(t, memberName)
	ns := m.Namespace(t)
	before := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kept"}, Data: map[string]string{"k": "v"}}
	if err := m.Client.Create(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	pid := apiServerPID(t, m)

	m.StopAPIServer(t)
	if err := readyz(m); err == nil {
		t.Fatal("member /readyz answers after StopAPIServer")
	}
	if _, err := os.Stat(filepath.Join("/proc", pid)); err == nil {
		t.Errorf("the member's kube-apiserver (pid %s) is still alive", pid)
	}
	if err := readyz(c); err != nil {
		t.Errorf("the primary is affected: /readyz: %v", err)
	}

	m.StartAPIServer(t)
	if err := readyz(m); err != nil {
		t.Fatalf("member /readyz after StartAPIServer: %v", err)
	}
	if now := apiServerPID(t, m); now == pid {
		t.Errorf("kube-apiserver pid file still names the stopped process %s", pid)
	}
	after := &corev1.ConfigMap{}
	if err := m.Client.Get(context.Background(), client.ObjectKeyFromObject(before), after); err != nil {
		t.Fatalf("ConfigMap created before the stop: %v", err)
	}
	if after.UID != before.UID || after.Data["k"] != "v" {
		t.Errorf("ConfigMap changed across the restart: uid %s → %s, data %v", before.UID, after.UID, after.Data)
	}
	status := exec.Command(filepath.Join(repoRoot(t), "hack", "cluster.sh"), "status", "--name", m.Name)
	status.Env = append(os.Environ(), "VANE_RUN_DIR="+m.RunDir)
	out, err := status.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kube-apiserver           running  pid "+apiServerPID(t, m)) {
		t.Errorf("hack/cluster.sh status after the restart: %v\n%s", err, out)
	}
}

func readyz(c *framework.Cluster) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err
}

func apiServerPID(t *testing.T, c *framework.Cluster) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.RunDir, "pids", "kube-apiserver.pid"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// The member's webhook is vane's webhook: the one of manifests/base (through
// the Service) and of hack/local-webhook.yaml, apart from clientConfig.
func TestMemberWebhookMatchesBase(t *testing.T) {
	root := repoRoot(t)
	load := func(path string) admissionregistrationv1.MutatingWebhook {
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		if err := yaml.UnmarshalStrict(b, &mwc); err != nil || len(mwc.Webhooks) != 1 || mwc.Name != "vane" {
			t.Fatalf("%s: %v (%d webhooks, name %q)", path, err, len(mwc.Webhooks), mwc.Name)
		}
		w := mwc.Webhooks[0]
		w.ClientConfig = admissionregistrationv1.WebhookClientConfig{}
		return w
	}
	base := load("manifests/base/webhook.yaml")
	for _, path := range []string{"manifests/remote/webhook.yaml", "hack/local-webhook.yaml"} {
		if diff := cmp.Diff(base, load(path)); diff != "" {
			t.Errorf("%s differs from manifests/base/webhook.yaml (-base,+%s):\n%s", path, path, diff)
		}
	}
}

// hack/cluster.sh --name: its own run dir by default; VANE_RUN_DIR still
// wins; a name that cannot be a context or Secret key is refused.
func TestClusterNamedEnv(t *testing.T) {
	script := filepath.Join(repoRoot(t), "hack", "cluster.sh")
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(script, args...)
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, "VANE_") {
				cmd.Env = append(cmd.Env, e)
			}
		}
		cmd.Env = append(cmd.Env, env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unnamed", nil, []string{"env"}, "export KUBECONFIG=/tmp/vane-cluster/kubeconfig\n"},
		{"flag", nil, []string{"env", "--name", "b"}, "export KUBECONFIG=/tmp/vane-cluster-b/kubeconfig\n"},
		{"env var", []string{"VANE_CLUSTER_NAME=c2"}, []string{"env"}, "export KUBECONFIG=/tmp/vane-cluster-c2/kubeconfig\n"},
		{"run dir wins", []string{"VANE_RUN_DIR=/tmp/x"}, []string{"env", "--name=b"}, "export KUBECONFIG=/tmp/x/kubeconfig\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(tc.env, tc.args...)
			if err != nil || !strings.HasPrefix(out, tc.want) {
				t.Errorf("cluster.sh %v: %v\n%s\nwant first line %q", tc.args, err, out, tc.want)
			}
		})
	}
	if out, err := run(nil, "status", "--name", "Bad_Name"); err == nil || !strings.Contains(out, "must be lower-case") {
		t.Errorf("cluster.sh status --name Bad_Name: %v\n%s", err, out)
	}
}
