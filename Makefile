# Local development on a cluster of plain processes (see hack/README.md).
RUN_DIR ?= /tmp/vane-cluster
export VANE_RUN_DIR := $(RUN_DIR)

.PHONY: up down demo test unit e2e build

## up: local cluster + vane running and registered; prints the KUBECONFIG export.
## MESH=1 adds istiod and pods that answer (hack/mesh.sh, hack/README.md).
up:
	hack/cluster.sh up $(if $(MESH),--mesh) >/dev/null
	hack/vane.sh start
	@hack/cluster.sh env | grep -E 'KUBECONFIG|VANE_ISTIOD_XDS'

## down: stop vane and the cluster, remove the run dir.
down:
	hack/vane.sh stop || true
	hack/cluster.sh down

## demo: the seed's weight scenario end to end.
demo:
	hack/demo.sh

## test: every test (unit and e2e on a real local cluster).
test:
	hack/test.sh

unit:
	go test ./internal/... ./cmd/...

e2e:
	$(if $(MESH),hack/mesh.sh build && VANE_MESH=1) go test ./e2e/... -count=1 -v -timeout 30m

build:
	go build -o bin/vane ./cmd/webhook
