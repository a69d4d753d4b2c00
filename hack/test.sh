#!/usr/bin/env bash
# test.sh: every test. Unit tests, then the e2e suite, which starts its own
# local control plane (hack/cluster.sh, binaries built once into
# ~/.cache/vane) and runs vane registered over TLS. Extra arguments go to
# `go test` (e.g. -run TestWeight -v).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
hack/deps.sh
hack/cluster.sh build
go vet ./...
go test -count=1 -timeout 30m "$@" ./...
