package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/vane-io/vane/e2e/framework"
)

// controlPlaneFlags lift the client-side rate limits of the controller
// manager and the scheduler (20 and 50 QPS by default) as kwokctl does for
// its benchmarks: with 1,000 releases their pods would otherwise trickle in
// and spread every figure that follows over minutes.
var controlPlaneFlags = map[string]string{
	"VANE_CONTROLLER_MANAGER_FLAGS": "--kube-api-qps=5000 --kube-api-burst=10000",
	"VANE_SCHEDULER_FLAGS":          "--kube-api-qps=5000 --kube-api-burst=10000",
}

// Cluster starts a cluster of the bench's own, or with reuse connects to
// the one of $VANE_RUN_DIR. A cluster the bench shares with e2e tests
// would see vane's webhook unregistered under it, so it never reuses one
// by accident.
func Cluster(ctx context.Context, reuse bool) (*framework.Cluster, error) {
	if reuse {
		runDir := os.Getenv("VANE_RUN_DIR")
		if runDir == "" {
			runDir = framework.DefaultRunDir
		}
		if err := errors.Join(os.Setenv("KUBECONFIG", filepath.Join(runDir, "kubeconfig")), os.Setenv("VANE_E2E_REUSE", "1")); err != nil {
			return nil, err
		}
		return framework.StartContext(ctx)
	}
	errs := []error{os.Unsetenv("KUBECONFIG"), os.Unsetenv("VANE_E2E_REUSE"), os.Unsetenv("VANE_RUN_DIR")}
	for k, v := range controlPlaneFlags {
		if os.Getenv(k) == "" {
			errs = append(errs, os.Setenv(k, v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return framework.StartContext(ctx)
}
