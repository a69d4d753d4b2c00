// Package framework runs the e2e tests against a local control plane started
// by hack/cluster.sh (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok as plain processes).
//
// Typical use:
//
//	func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		c := framework.Current(t)
//		ns := c.Namespace(t)
//		... c.Client.Create(ctx, obj) ...
//	}
//
// Environment:
//
//	VANE_E2E_SKIP=1    Main runs no cluster and Current skips every test.
//	VANE_E2E_REUSE=1   use the running cluster at $KUBECONFIG (default
//	                   /tmp/vane-cluster/kubeconfig) instead of starting one;
//	                   it is left running. A $KUBECONFIG that points into
//	                   $VANE_RUN_DIR (default /tmp/vane-cluster), i.e. a
//	                   cluster from `hack/cluster.sh up`, is reused without it
//	                   when it answers. Any other KUBECONFIG is ignored, so
//	                   the tests never touch a real cluster by accident.
//	VANE_E2E_KEEP=1    leave a cluster the framework started running after
//	                   the tests (its run dir is printed; stop it with
//	                   VANE_RUN_DIR=<dir> hack/cluster.sh down).
package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istionetworkingv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultRunDir is where `hack/cluster.sh up` puts a cluster when
// VANE_RUN_DIR is unset.
const DefaultRunDir = "/tmp/vane-cluster"

// LogTailLines is how many lines of each component log DumpLogs prints.
const LogTailLines = 50

// Cluster is a running control plane.
type Cluster struct {
	// Name is "" for the cluster Main starts (the primary, where vane runs)
	// and the member's name for one from StartMember (hack/cluster.sh --name:
	// also its kubeconfig's cluster and context).
	Name string
	// RESTConfig authenticates as cluster admin (system:masters).
	RESTConfig *rest.Config
	// Client is a controller-runtime client whose Scheme has client-go's
	// types plus Istio networking.istio.io v1 and v1beta1.
	Client client.Client
	// Scheme is the scheme of Client.
	Scheme *k8sruntime.Scheme
	// Clientset is a typed client-go clientset.
	Clientset kubernetes.Interface
	// Dynamic is a dynamic client, for sending objects the typed clients
	// cannot express (e.g. schema-invalid ones).
	Dynamic dynamic.Interface
	// Kubeconfig is the path of the admin kubeconfig.
	Kubeconfig string
	// RunDir holds the cluster's pki/, logs/ and pids/ ("" if unknown,
	// e.g. a reused cluster whose kubeconfig lives elsewhere).
	RunDir string
	// Reused is true when the cluster was already running and Stop leaves it.
	Reused bool

	root     string
	owned    bool
	stopOnce sync.Once
	stopErr  error
}

// NewScheme returns a new scheme with client-go's types and Istio networking
// v1 and v1beta1.
func NewScheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(istionetworkingv1.AddToScheme(s))
	utilruntime.Must(istionetworkingv1beta1.AddToScheme(s))
	return s
}

// Start returns a running cluster: the one at $KUBECONFIG when reuse applies
// (see the package doc), otherwise a new one started with `hack/cluster.sh
// up` in a fresh temporary run dir on free ports. Call Stop when done.
func Start() (*Cluster, error) { return StartContext(context.Background()) }

// StartContext is Start with a context; cancelling it interrupts a cluster
// that is still starting (cluster.sh stops what it started).
func StartContext(ctx context.Context) (*Cluster, error) {
	if c, ok, err := reuse(ctx); ok || err != nil {
		return c, err
	}
	return startNamed(ctx, "")
}

// startNamed starts a cluster with `hack/cluster.sh up` (--name name unless
// "") in a fresh temporary run dir on free ports.
func startNamed(ctx context.Context, name string) (*Cluster, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	prefix := "vane-e2e-"
	if name != "" {
		prefix += name + "-"
	}
	runDir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Name:       name,
		Kubeconfig: filepath.Join(runDir, "kubeconfig"),
		RunDir:     runDir,
		root:       root,
		owned:      true,
	}
	env := []string{
		"VANE_CLUSTER_NAME=" + name,
		"VANE_RUN_DIR=" + runDir,
		"VANE_APISERVER_PORT=" + strconv.Itoa(ports[0]),
		"VANE_ETCD_PORT=" + strconv.Itoa(ports[1]),
		"VANE_ETCD_PEER_PORT=" + strconv.Itoa(ports[2]),
	}
	if os.Getenv("VANE_E2E_KEEP") != "1" {
		// cluster.sh starts a watchdog that runs `down` once this process
		// is gone, even if it is killed or panics on a test timeout.
		env = append(env, "VANE_OWNER_PID="+strconv.Itoa(os.Getpid()))
	}
	fmt.Fprintf(os.Stderr, "framework: starting cluster %s in %s (API port %d)\n", c.label(), runDir, ports[0])
	start := time.Now()
	if _, err := c.script(ctx, env, "up"); err != nil {
		if ctx.Err() == nil {
			c.DumpLogs(os.Stderr)
		}
		_ = c.Stop()
		return nil, fmt.Errorf("hack/cluster.sh up: %w", err)
	}
	fmt.Fprintf(os.Stderr, "framework: cluster %s ready in %s\n", c.label(), time.Since(start).Round(10*time.Millisecond))
	if err := c.connect(); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

func reuse(ctx context.Context) (*Cluster, bool, error) {
	runDir := os.Getenv("VANE_RUN_DIR")
	if runDir == "" {
		runDir = DefaultRunDir
	}
	kubeconfig := os.Getenv("KUBECONFIG")
	explicit := os.Getenv("VANE_E2E_REUSE") == "1"
	if explicit && kubeconfig == "" {
		kubeconfig = filepath.Join(runDir, "kubeconfig")
	}
	if kubeconfig == "" {
		return nil, false, nil
	}
	abs, err := filepath.Abs(kubeconfig)
	if err != nil {
		return nil, false, err
	}
	inRunDir := filepath.Dir(abs) == filepath.Clean(runDir)
	if !explicit && !inRunDir {
		return nil, false, nil
	}
	c := &Cluster{Kubeconfig: abs, Reused: true}
	if _, err := os.Stat(filepath.Join(filepath.Dir(abs), "logs")); err == nil {
		c.RunDir = filepath.Dir(abs)
	}
	if err := c.connect(); err == nil {
		err = c.ready(ctx)
		if err == nil {
			fmt.Fprintf(os.Stderr, "framework: reusing the cluster at %s\n", abs)
			return c, true, nil
		}
	} else if explicit {
		return nil, false, fmt.Errorf("VANE_E2E_REUSE=1 but %s is unusable: %w", abs, err)
	}
	if explicit {
		return nil, false, fmt.Errorf("VANE_E2E_REUSE=1 but the cluster at %s does not answer", abs)
	}
	return nil, false, nil
}

func (c *Cluster) connect() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("loading %s: %w", c.Kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	c.RESTConfig = cfg
	c.Scheme = NewScheme()
	if c.Client, err = client.New(cfg, client.Options{Scheme: c.Scheme}); err != nil {
		return err
	}
	if c.Clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if c.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return err
	}
	return nil
}

func (c *Cluster) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.Clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err
}

// Stop tears down a cluster the framework started (`hack/cluster.sh down`,
// then removes the run dir). It leaves a reused cluster running, and with
// VANE_E2E_KEEP=1 a started one too. Safe to call more than once and from
// several goroutines.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if !c.owned {
			return
		}
		if os.Getenv("VANE_E2E_KEEP") == "1" {
			fmt.Fprintf(os.Stderr, "framework: VANE_E2E_KEEP=1: cluster left running; KUBECONFIG=%s; stop it with VANE_RUN_DIR=%s hack/cluster.sh down\n", c.Kubeconfig, c.RunDir)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, c.stopErr = c.script(ctx, []string{"VANE_RUN_DIR=" + c.RunDir}, "down")
		if err := os.RemoveAll(c.RunDir); err != nil && c.stopErr == nil {
			c.stopErr = err
		}
	})
	return c.stopErr
}

// script runs hack/cluster.sh in its own process group, so a Ctrl-C in the
// terminal reaches only this process, which then decides what to stop.
// Cancelling ctx sends SIGTERM to the script, whose trap cleans up.
func (c *Cluster) script(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(c.root, "hack", "cluster.sh")}, args...)...)
	cmd.Dir = c.root
	cmd.Env = append(os.Environ(), env...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return stdout.String(), err
}

// label names the cluster in messages: "primary" or "member <name>".
func (c *Cluster) label() string {
	if c.Name == "" {
		return "primary"
	}
	return "member " + c.Name
}

// DumpLogs writes the last LogTailLines lines of every component log
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, ...).
func (c *Cluster) DumpLogs(w io.Writer) {
	if c == nil || c.RunDir == "" {
		fmt.Fprintln(w, "framework: no run dir known, no component logs to dump")
		return
	}
	fmt.Fprintf(w, "\nframework: logs of the %s cluster (%s)\n", c.label(), c.RunDir)
	files, _ := filepath.Glob(filepath.Join(c.RunDir, "logs", "*.log"))
	sort.Strings(files)
	if len(files) == 0 {
		fmt.Fprintf(w, "framework: no logs in %s/logs\n", c.RunDir)
		return
	}
	for _, f := range files {
		fmt.Fprintf(w, "\n===== %s (last %d lines) =====\n", f, LogTailLines)
		lines, err := tail(f, LogTailLines)
		if err != nil {
			fmt.Fprintf(w, "(%v)\n", err)
			continue
		}
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
}

func tail(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const chunk = 256 << 10
	off := max(st.Size()-chunk, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if off > 0 && len(lines) > 0 {
		lines = lines[1:] // partial first line
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}

// RepoRoot finds the repository root (the directory holding
// hack/cluster.sh): $VANE_ROOT, else the nearest ancestor of the working
// directory, else relative to this source file.
func RepoRoot() (string, error) {
	has := func(d string) bool {
		_, err := os.Stat(filepath.Join(d, "hack", "cluster.sh"))
		return err == nil
	}
	if d := os.Getenv("VANE_ROOT"); d != "" {
		if has(d) {
			return d, nil
		}
		return "", fmt.Errorf("VANE_ROOT=%s has no hack/cluster.sh", d)
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if has(d) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		if d := filepath.Join(filepath.Dir(file), "..", ".."); has(d) {
			return filepath.Clean(d), nil
		}
	}
	return "", errors.New("cannot find the repository root (hack/cluster.sh); set VANE_ROOT")
}

// FreePorts returns n free loopback ports (the bench uses it too).
func FreePorts(n int) ([]int, error) { return freePorts(n) }

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
