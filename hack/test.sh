#!/usr/bin/env bash
# test.sh: every test. Unit tests, then the e2e suite, which starts its own
# local control plane (hack/cluster.sh, binaries built once into
# ~/.cache/vane) and runs vane registered over TLS, and the mesh tests, which
# add istiod and pods that answer and send real traffic through a proxyless
# gRPC client (VANE_MESH=0 leaves them out). Extra arguments go to `go test`
# (e.g. -run TestWeight -v).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
hack/deps.sh
hack/cluster.sh build
export VANE_MESH=${VANE_MESH:-1}
[[ $VANE_MESH != 1 ]] || hack/mesh.sh build
go vet ./...
# The house style's lint rules (.golangci.yml), with a pinned linter built
# once into the cache.
LINT_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/vane/tools/golangci-lint-v2.15.0
[[ -x $LINT_DIR/golangci-lint ]] || GOBIN=$LINT_DIR go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
"$LINT_DIR/golangci-lint" run ./...
go test -count=1 -timeout 30m "$@" ./...
