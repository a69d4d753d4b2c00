package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vane-io/vane/e2e/framework"
)

// Names vane's local set-up uses (hack/vane.sh, manifests/base).
const (
	webhookConfigName = "vane"
	vaneNamespace     = "vane-system"
	leaseName         = "vane.io"
	// holder is the identity under which the bench holds vane's lease, so
	// that vane's webhook answers while its controller waits.
	holder = "vane-bench"
)

// lock takes $RUN_DIR/bench.lock for the life of the process: two runs on
// one cluster would unregister the webhook and restart vane under each
// other.
func lock(runDir string) error {
	f, err := os.OpenFile(filepath.Join(runDir, "bench.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("another bench runs on the cluster of %s: %w", runDir, err)
	}
	held = append(held, f) // kept open (and out of the GC's reach): the lock goes with the process
	return nil
}

var held []*os.File

// env is the cluster a run uses and the vane it runs on it.
type env struct {
	c *framework.Cluster
	// kube is the load generator's client: protobuf, no client-side rate
	// limit (it runs as system:masters, exempt from API priority and
	// fairness), so the API server and vane are what is measured.
	kube  kubernetes.Interface
	istio istioclient.Interface
	vane  *vane
	runID string
	// namespaces the run created, deleted at the end.
	namespaces []string
	nodes      []string
}

// loaderQPS is the load generator's client-side limit: none.
const loaderQPS = -1

func newEnv(c *framework.Cluster) (*env, error) {
	if c.RunDir == "" {
		return nil, fmt.Errorf("the cluster at %s has no run dir (logs/, pids/): the bench needs one to run vane (hack/vane.sh)", c.Kubeconfig)
	}
	if err := lock(c.RunDir); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(c.RESTConfig)
	cfg.QPS, cfg.Burst = loaderQPS, 0
	cfg.Timeout = time.Minute
	proto := rest.CopyConfig(cfg)
	proto.ContentType = "application/vnd.kubernetes.protobuf"
	proto.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	kube, err := kubernetes.NewForConfig(proto)
	if err != nil {
		return nil, err
	}
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	v, err := newVane(c)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return &env{c: c, kube: kube, istio: ic, vane: v, runID: hex.EncodeToString(b)}, nil
}

// namespace creates a namespace for one part of the run.
func (e *env) namespace(ctx context.Context, part string) (string, error) {
	name := fmt.Sprintf("vane-bench-%s-%s", e.runID, part)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{benchLabel: e.runID}}}
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create namespace %s: %w", name, err)
	}
	e.namespaces = append(e.namespaces, name)
	return name, nil
}

// dropNamespace deletes ns; with wait it first deletes its Deployments and
// returns once they are gone (vane's finalizer, if any, removed), not
// waiting for the namespace controller.
func (e *env) dropNamespace(ctx context.Context, ns string, wait bool) error {
	if wait {
		deploys := e.kube.AppsV1().Deployments(ns)
		bg := metav1.DeletePropagationBackground
		if err := deploys.DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &bg}, metav1.ListOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete deployments of %s: %w", ns, err)
		}
		err := poll(ctx, 2*time.Minute, "deployments of "+ns+" gone", func(ctx context.Context) (bool, error) {
			l, err := deploys.List(ctx, metav1.ListOptions{Limit: 1})
			return err == nil && len(l.Items) == 0, nil
		})
		if err != nil {
			return err
		}
	}
	if err := e.kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	return nil
}

// cleanup removes what the run created on a cluster it does not own. A
// release deleted mid-way keeps vane's finalizer until vane finalizes it;
// the bench drops the finalizer instead of waiting for a thousand of them.
func (e *env) cleanup(ctx context.Context) {
	for _, ns := range e.namespaces {
		_ = e.kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		l, err := e.kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		for _, d := range l.Items {
			if len(d.Finalizers) > 0 {
				_, _ = e.kube.AppsV1().Deployments(ns).Patch(ctx, d.Name, types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{})
			}
		}
	}
	for _, n := range e.nodes {
		_ = e.kube.CoreV1().Nodes().Delete(ctx, n, metav1.DeleteOptions{})
	}
	_ = e.releaseLease(ctx)
}

// poll calls cond every 50ms until it is true.
func poll(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, cond); err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

// holdLease takes vane's leader-election lease for the bench before vane
// starts with --leader-elect: vane's webhook serves (webhooks run on every
// replica) while its controller waits, so admission is measured without
// the releases it starts.
func (e *env) holdLease(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: vaneNamespace}}
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	now := metav1.NewMicroTime(time.Now())
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: vaneNamespace, Name: leaseName},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr(holder),
			LeaseDurationSeconds: ptr[int32](3600),
			AcquireTime:          &now,
			RenewTime:            &now,
		},
	}
	_ = e.releaseLease(ctx)
	if _, err := e.kube.CoordinationV1().Leases(vaneNamespace).Create(ctx, l, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("hold lease: %w", err)
	}
	return nil
}

func (e *env) releaseLease(ctx context.Context) error {
	err := e.kube.CoordinationV1().Leases(vaneNamespace).Delete(ctx, leaseName, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func ptr[T any](v T) *T { return &v }

// webhookConfig returns vane's MutatingWebhookConfiguration as registered
// (caBundle included), ready to be created again.
func (e *env) webhookConfig(ctx context.Context) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	cfg, err := e.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookConfigName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get mutatingwebhookconfiguration: %w", err)
	}
	cfg.ResourceVersion, cfg.UID, cfg.ManagedFields, cfg.CreationTimestamp, cfg.Generation = "", "", nil, metav1.Time{}, 0
	return cfg, nil
}

// register creates saved (nil: deletes vane's configuration) and waits
// until the API server acts on it, as seen by probe.
func (e *env) register(ctx context.Context, saved *admissionregistrationv1.MutatingWebhookConfiguration, probe func(context.Context) (bool, error)) error {
	whc := e.kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if saved == nil {
		if err := whc.Delete(ctx, webhookConfigName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("unregister: %w", err)
		}
	} else if _, err := whc.Create(ctx, saved.DeepCopy(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register: %w", err)
	}
	want := saved != nil
	return poll(ctx, 30*time.Second, fmt.Sprintf("webhook registered=%v to take effect", want), func(ctx context.Context) (bool, error) {
		got, err := probe(ctx)
		return err == nil && got == want, nil
	})
}

// addNodes creates n fake nodes (kwok) of the given pod capacity.
func (e *env) addNodes(ctx context.Context, n, pods int) error {
	for i := range n {
		name := fmt.Sprintf("vane-bench-%s-node-%d", e.runID, i)
		capacity := corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("10000"),
			corev1.ResourceMemory: resource.MustParse("10Ti"),
			corev1.ResourcePods:   *resource.NewQuantity(int64(pods), resource.DecimalSI),
		}
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
				Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", benchLabel: e.runID},
			},
			Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
		}
		if _, err := e.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create node %s: %w", name, err)
		}
		e.nodes = append(e.nodes, name)
	}
	return poll(ctx, time.Minute, "bench nodes Ready", func(ctx context.Context) (bool, error) {
		for _, name := range e.nodes {
			n, err := e.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil || !nodeReady(n) {
				return false, nil
			}
		}
		return true, nil
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// freePods is the number of pods the Ready nodes can still take.
func (e *env) freePods(ctx context.Context) (int, error) {
	nodes, err := e.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	total := 0
	for i := range nodes.Items {
		if nodeReady(&nodes.Items[i]) {
			total += int(nodes.Items[i].Status.Allocatable.Pods().Value())
		}
	}
	pods, err := e.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return 0, err
	}
	return total - len(pods.Items), nil
}

// apiserverMetrics is the API server's /metrics text ("" when it does not
// answer).
func (e *env) apiserverMetrics(ctx context.Context) string {
	raw, err := e.kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return ""
	}
	return string(raw)
}

// componentFlags returns the flags of a control-plane component the
// cluster runs, matching prefix (e.g. "--kube-api-").
func (e *env) componentFlags(component, prefix string) string {
	pid, err := readPid(filepath.Join(e.c.RunDir, "pids", component+".pid"))
	if err != nil {
		return "unknown"
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "unknown"
	}
	var out []string
	for _, a := range strings.Split(string(raw), "\x00") {
		if strings.HasPrefix(a, prefix) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return "defaults"
	}
	return strings.Join(out, " ")
}

// vane runs vane's binary on the host against the cluster through
// hack/vane.sh, with its own ports.
type vane struct {
	// args are added at every start.
	args    []string
	root    string
	runDir  string
	env     []string
	metrics string
	built   bool
}

func newVane(c *framework.Cluster) (*vane, error) {
	root, err := framework.RepoRoot()
	if err != nil {
		return nil, err
	}
	ports, err := framework.FreePorts(3)
	if err != nil {
		return nil, err
	}
	return &vane{
		root:   root,
		runDir: c.RunDir,
		env: []string{
			"VANE_RUN_DIR=" + c.RunDir,
			"VANE_KUBECONFIG=" + c.Kubeconfig,
			"VANE_WEBHOOK_PORT=" + strconv.Itoa(ports[0]),
			"VANE_PROBE_PORT=" + strconv.Itoa(ports[1]),
			"VANE_METRICS_PORT=" + strconv.Itoa(ports[2]),
			"VANE_LOG_LEVEL=info",
		},
		metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[2]),
	}, nil
}

func (v *vane) script(ctx context.Context, cmd string, extra ...string) error {
	run := exec.CommandContext(ctx, filepath.Join(v.root, "hack", "vane.sh"), cmd)
	run.Env = append(append(os.Environ(), v.env...), extra...)
	out, err := run.CombinedOutput()
	if err != nil {
		return fmt.Errorf("hack/vane.sh %s: %w\n%s", cmd, err, out)
	}
	return nil
}

// start starts vane (building it the first time) with extra flags.
func (v *vane) start(ctx context.Context, args ...string) error {
	extra := []string{"VANE_EXTRA_ARGS=" + strings.Join(append(slices.Clone(v.args), args...), " ")}
	if v.built {
		extra = append(extra, "VANE_SKIP_BUILD=1")
	}
	if err := v.script(ctx, "start", extra...); err != nil {
		return err
	}
	v.built = true
	return nil
}

func (v *vane) stop(ctx context.Context) error { return v.script(ctx, "stop") }

// restart stops vane and starts a fresh process: its peak RSS and CPU
// time count from here.
func (v *vane) restart(ctx context.Context, args ...string) error {
	if err := v.stop(ctx); err != nil {
		return err
	}
	return v.start(ctx, args...)
}

func (v *vane) pid() (int, error) { return readPid(filepath.Join(v.runDir, "pids", "vane.pid")) }

func readPid(path string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(raw)))
}

// procStats is what /proc says of a process.
type procStats struct {
	// rss and hwm are VmRSS and VmHWM (peak RSS) in bytes.
	rss, hwm int64
	// cpu is utime+stime.
	cpu time.Duration
}

// clockTicks is USER_HZ, 100 on every Linux the bench runs on.
const clockTicks = 100

func readProc(pid int) (procStats, error) {
	var s procStats
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return s, fmt.Errorf("%s: %w", k, err)
		}
		if k == "VmRSS" {
			s.rss = kb << 10
		} else {
			s.hwm = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name (which may hold spaces) start at ")".
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(fields) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	s.cpu = time.Duration(utime+stime) * time.Second / clockTicks
	return s, nil
}

func (v *vane) stats() (procStats, error) {
	pid, err := v.pid()
	if err != nil {
		return procStats{}, err
	}
	return readProc(pid)
}

// mib prints bytes in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
