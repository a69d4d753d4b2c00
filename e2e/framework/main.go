package framework

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

var (
	currentMu   sync.Mutex
	current     *Cluster
	mainCtx     context.Context // cancelled by SIGINT/SIGTERM
	interrupted atomic.Bool
)

// Skipped reports whether VANE_E2E_SKIP=1 is set.
func Skipped() bool { return os.Getenv("VANE_E2E_SKIP") == "1" }

// Main starts the cluster, runs the tests, dumps the component logs if the
// run failed, and stops the cluster and the members StartMember started. SIGINT and SIGTERM also stop the cluster
// (or interrupt its start-up) before the process exits. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }
func Main(m *testing.M) int {
	if Skipped() {
		return m.Run()
	}
	// Clients made later than 30 s into the run (a member's) would print a
	// stack trace about a logger never set.
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "\nframework: received %v, tearing the cluster down\n", sig)
		interrupted.Store(true)
		cancel()          // interrupts a start-up in progress; Main's own path then cleans up
		_ = stopMembers() // it reports its errors
		currentMu.Lock()
		c := current
		currentMu.Unlock()
		if c == nil {
			return
		}
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "framework: stopping the cluster: %v\n", err)
		}
		code := 130
		if sig == syscall.SIGTERM {
			code = 143
		}
		os.Exit(code)
	}()

	c, err := StartContext(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "framework: starting the cluster: %v\n", err)
		return 1
	}
	currentMu.Lock()
	current = c
	mainCtx = ctx
	currentMu.Unlock()
	if ctx.Err() != nil { // a signal arrived just as start-up finished
		_ = c.Stop()
		return 1
	}

	code := m.Run()
	if code != 0 && !interrupted.Load() { // interrupted: the logs are going away
		fmt.Fprintln(os.Stderr, "framework: tests failed; component logs follow")
		c.DumpLogs(os.Stderr)
		for _, m := range startedMembers() {
			m.DumpLogs(os.Stderr)
		}
	}
	if err := stopMembers(); err != nil && code == 0 {
		code = 1
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "framework: stopping the cluster: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Current returns the cluster Main started. It skips the test when
// VANE_E2E_SKIP=1 and fails it when Main was not used.
func Current(t testing.TB) *Cluster {
	t.Helper()
	if Skipped() {
		t.Skip("VANE_E2E_SKIP=1")
	}
	currentMu.Lock()
	defer currentMu.Unlock()
	if current == nil {
		t.Fatal("framework: no cluster; use `func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }`")
	}
	return current
}

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a namespace with a unique name derived from the test's
// name, waits for its default ServiceAccount (so Pods are admitted at once),
// and deletes it when the test ends. It returns the name.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	base := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "e2e-" + base + "-" + hex.EncodeToString(b)

	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   name,
		Labels: map[string]string{"vane.io/e2e": "true"},
	}}
	if _, err := c.Clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		err := c.Clientset.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", name, err)
		}
	})
	WaitFor(t, 30*time.Second, "default ServiceAccount in "+name, func(ctx context.Context) (bool, error) {
		_, err := c.Clientset.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	return name
}

// Namespace is Current(t).Namespace(t).
func Namespace(t testing.TB) string {
	t.Helper()
	return Current(t).Namespace(t)
}

// WaitFor polls cond every 100ms until it returns true, and fails the test
// if it returns an error or timeout passes. A condition that wants to retry
// on an error should return (false, nil) and remember the error itself.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
