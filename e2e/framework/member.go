package framework

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// members are the clusters StartMember started, by name; Main stops them.
var members struct {
	sync.Mutex
	byName map[string]*memberStart
}

type memberStart struct {
	once sync.Once
	c    *Cluster
	err  error
}

// StartMember returns the member cluster name, started on the first call of
// the test binary with `hack/cluster.sh up --name name` in its own temporary
// run dir on free ports (with the watchdog that stops it if the test binary
// dies). Main stops it with the primary and dumps its logs when tests fail.
// It skips the test when VANE_E2E_SKIP=1. A member is shared by every test
// that asks for the same name: leave it as you found it.
func StartMember(t testing.TB, name string) *Cluster {
	t.Helper()
	Current(t) // skips with VANE_E2E_SKIP=1, fails without Main
	if name == "" {
		t.Fatal("framework: StartMember needs a name")
	}
	members.Lock()
	if members.byName == nil {
		members.byName = map[string]*memberStart{}
	}
	ms := members.byName[name]
	if ms == nil {
		ms = &memberStart{}
		members.byName[name] = ms
	}
	members.Unlock()
	ms.once.Do(func() {
		currentMu.Lock()
		ctx := mainCtx
		currentMu.Unlock()
		if ctx == nil {
			ctx = context.Background()
		}
		c, err := startNamed(ctx, name)
		members.Lock() // Main's signal handler reads c
		ms.c, ms.err = c, err
		members.Unlock()
	})
	members.Lock()
	defer members.Unlock()
	if ms.err != nil {
		t.Fatalf("framework: starting member cluster %s: %v", name, ms.err)
	}
	return ms.c
}

// startedMembers returns the members that started, in name order.
func startedMembers() []*Cluster {
	members.Lock()
	defer members.Unlock()
	names := make([]string, 0, len(members.byName))
	for n := range members.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	var cs []*Cluster
	for _, n := range names {
		if c := members.byName[n].c; c != nil {
			cs = append(cs, c)
		}
	}
	return cs
}

// stopMembers stops every member StartMember started.
func stopMembers() error {
	var errs []error
	for _, m := range startedMembers() {
		if err := m.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "framework: stopping member cluster %s: %v\n", m.Name, err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// AddMember registers m with the vane of the Current cluster, as
// `hack/member.sh add` does: manifests/remote applied in m (its webhook calls
// this vane by URL, with its CA), and in the Current cluster the Secret
// vane-system/vane-remote-secret-<m.Name> labelled istio/multiCluster=true
// with a kubeconfig for m's ServiceAccount vane-remote. It starts vane first
// if needed (Vane). The Secret is deleted when the test ends.
func AddMember(t testing.TB, m *Cluster) {
	t.Helper()
	Vane(t)
	if err := memberScript(m, "add", m.Name); err != nil {
		t.Fatalf("add member %s: %v", m.Name, err)
	}
	t.Cleanup(func() {
		if err := memberScript(m, "remove", m.Name); err != nil {
			t.Errorf("remove member %s: %v", m.Name, err)
		}
	})
}

// RemoveMember deletes the Secret AddMember created (`hack/member.sh
// remove`); what was applied in m stays.
func RemoveMember(t testing.TB, m *Cluster) {
	t.Helper()
	if err := memberScript(m, "remove", m.Name); err != nil {
		t.Fatalf("remove member %s: %v", m.Name, err)
	}
}

// MemberSecretName is the name of the Secret AddMember creates in vane's
// namespace of the Current cluster for the member m.
func MemberSecretName(m *Cluster) string { return "vane-remote-secret-" + m.Name }

func memberScript(m *Cluster, args ...string) error {
	if m.Name == "" || m.RunDir == "" {
		return errors.New("not a member cluster from StartMember")
	}
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	vane.Lock()
	env := slices.Clone(vane.env)
	vane.Unlock()
	cmd := exec.CommandContext(context.Background(), filepath.Join(root, "hack", "member.sh"), args...)
	cmd.Env = append(append(os.Environ(), env...),
		"VANE_MEMBER_RUN_DIR="+m.RunDir, "VANE_MEMBER_KUBECONFIG="+m.Kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("hack/member.sh %v: %w\n%s", args, err, out)
	}
	return nil
}

// StopAPIServer stops only c's kube-apiserver (`hack/cluster.sh
// stop-apiserver`): the cluster is unreachable, its data and other
// components stay. If the test ends with it stopped, it is started again.
func (c *Cluster) StopAPIServer(t testing.TB) {
	t.Helper()
	if err := c.apiServerScript("stop-apiserver"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.apiServerScript("start-apiserver"); err != nil {
			t.Errorf("restarting the API server of the %s cluster: %v", c.label(), err)
		}
	})
}

// StartAPIServer starts c's kube-apiserver again with the same flags and
// data (`hack/cluster.sh start-apiserver`) and returns once /readyz answers.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	if err := c.apiServerScript("start-apiserver"); err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) apiServerScript(cmd string) error {
	if c.RunDir == "" || c.Reused {
		return fmt.Errorf("%s: the %s cluster was not started by the framework", cmd, c.label())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := c.script(ctx, []string{"VANE_RUN_DIR=" + c.RunDir, "VANE_CLUSTER_NAME=" + c.Name}, cmd); err != nil {
		return fmt.Errorf("hack/cluster.sh %s (%s cluster): %w", cmd, c.label(), err)
	}
	return nil
}
