#!/usr/bin/env bash
# hack/mesh.sh — a real Istio control plane and pods that answer, on the local
# cluster of hack/cluster.sh (see hack/README.md, "The mesh").
#
#   hack/mesh.sh build   build pilot-discovery (istiod), podrunner and traffic into the cache
#   hack/mesh.sh start   on the running cluster in $VANE_RUN_DIR: the mesh node, istiod, podrunner
#   hack/mesh.sh stop    stop istiod and podrunner (hack/cluster.sh down stops them too)
#   hack/mesh.sh env     print the exports for hack/traffic (VANE_ISTIOD_XDS, PATH)
#
# Nothing here runs unless asked: `hack/cluster.sh up --mesh` / `make up MESH=1`.
set -euo pipefail

ISTIO_VERSION=v0.0.0-20260827124520-eed52ebb66ad # Istio 1.31 (istio.io/istio has no usable tags)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MESH_DIR=$ROOT/hack/mesh
MESH_BIN=${VANE_MESH_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vane/istio-${ISTIO_VERSION##*-}/bin}
RUN_DIR=${VANE_RUN_DIR:-/tmp/vane-cluster}
APISERVER_PORT=${VANE_APISERVER_PORT:-16443}
START_TIMEOUT=${VANE_START_TIMEOUT:-90}
MESH_NODE=${VANE_MESH_NODE:-kwok-mesh-0}
# Extra flags for istiod, and extra environment as NAME=VALUE words
# (e.g. VANE_ISTIOD_ENV=PILOT_DEBOUNCE_AFTER=10ms).
VANE_ISTIOD_FLAGS=${VANE_ISTIOD_FLAGS:-}
VANE_ISTIOD_ENV=${VANE_ISTIOD_ENV:-}
# kubectl of the cluster (hack/cluster.sh's cache).
K8S_BIN=${VANE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vane/k8s-v1.37.2/bin}
export PATH="$K8S_BIN:$PATH"
LOGS=$RUN_DIR/logs
PIDS=$RUN_DIR/pids
KUBECONFIG_FILE=$RUN_DIR/kubeconfig
MESH_ENV=$RUN_DIR/mesh.env

log() { printf '[mesh.sh %s] %s\n' "$(date +%H:%M:%S.%2N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- build ----

build_stamp() {
  { cat "$MESH_DIR/go.mod" "$MESH_DIR/go.sum" "$MESH_DIR"/podrunner/*.go "$MESH_DIR"/traffic/*.go; go env GOVERSION; } | sha256sum | cut -c1-16
}

cmd_build() {
  command -v go >/dev/null || die "go is not on PATH"
  if [[ -x $MESH_BIN/pilot-discovery && -x $MESH_BIN/podrunner && -x $MESH_BIN/traffic &&
    -f $MESH_BIN/.stamp && $(<"$MESH_BIN/.stamp") == "$(build_stamp)" ]]; then
    return 0
  fi
  mkdir -p "$MESH_BIN"
  rm -f "$MESH_BIN/.stamp"
  local start=$SECONDS
  log "building pilot-discovery (Istio $ISTIO_VERSION), podrunner and traffic into $MESH_BIN (cold: ~5-8 min on 2 cores)"
  (
    cd "$MESH_DIR"
    GOWORK=off go build -trimpath -ldflags=-s -o "$MESH_BIN/" \
      istio.io/istio/pilot/cmd/pilot-discovery ./podrunner ./traffic
  )
  build_stamp >"$MESH_BIN/.stamp"
  log "built in $((SECONDS - start))s"
}

# ---------------------------------------------------------------- start ----

kubectl_() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() { # a port nobody listens on, not one we already picked
  local p
  while :; do
    p=$((20000 + RANDOM % 30000))
    [[ " ${PICKED[*]:-} " == *" $p "* ]] && continue
    port_in_use "$p" && continue
    PICKED+=("$p")
    echo "$p"
    return
  done
}

# One /24 in 127.0.0.0/8 per cluster (keyed on its API server port), so that
# several clusters on one machine never bind the same pod address.
pod_cidr() {
  echo "${VANE_MESH_POD_CIDR:-127.$((1 + APISERVER_PORT % 250)).$(((APISERVER_PORT / 250) % 250)).0/24}"
}

# The mesh node: kwok gives its pods IPs from spec.podCIDR, here loopback
# addresses podrunner can bind without any setup. Labelled vane.io/mesh=true
# so apps that must answer pick it with a nodeSelector.
create_node() {
  kubectl_ apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: $MESH_NODE
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    vane.io/mesh: "true"
    kubernetes.io/hostname: $MESH_NODE
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec:
  podCIDR: $(pod_cidr)
  podCIDRs: [$(pod_cidr)]
status:
  allocatable: {cpu: "1000", memory: 1Ti, pods: "250"}
  capacity: {cpu: "1000", memory: 1Ti, pods: "250"}
YAML
}

alive() { [[ -f $PIDS/$1.pid ]] && kill -0 "$(<"$PIDS/$1.pid")" 2>/dev/null; }

start() { # start NAME ARGS... (own session, log and pid in the run dir)
  local name=$1
  shift
  setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}

wait_for() {
  local what=$1 timeout=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@"; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
    sleep 0.1
  done
}

istiod_ready() { curl -fsS "http://127.0.0.1:$ISTIOD_HTTP/ready" >/dev/null 2>&1; }
node_ready() {
  [[ $(kubectl_ get node "$MESH_NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
ns_active() {
  [[ $(kubectl_ get ns istio-system -o 'jsonpath={.status.phase}' 2>/dev/null) == Active ]]
}

cmd_start() {
  [[ -f $KUBECONFIG_FILE ]] || die "no cluster in $RUN_DIR (run hack/cluster.sh up first)"
  cmd_build
  if alive pilot-discovery && alive podrunner && [[ -f $MESH_ENV ]]; then
    log "mesh in $RUN_DIR is already running"
    cmd_env
    return 0
  fi
  cmd_stop 2>/dev/null || true
  local t0=$SECONDS
  PICKED=()
  ISTIOD_GRPC=${VANE_ISTIOD_PORT:-$(free_port)}
  ISTIOD_HTTP=$(free_port)
  local https secure monitoring
  https=$(free_port) secure=$(free_port) monitoring=$(free_port)

  kubectl_ create namespace istio-system --dry-run=client -o yaml | kubectl_ apply -f - >/dev/null
  create_node
  wait_for "namespace istio-system" "$START_TIMEOUT" ns_active

  mkdir -p "$RUN_DIR/mesh"
  # Out of cluster: --kubeconfig, every port on loopback (several clusters
  # may run on one machine). No mesh config file (defaults), no webhooks to
  # patch (none installed), its own self-signed CA only on secureGRPCAddr;
  # the clients use the plaintext xDS port.
  # shellcheck disable=SC2086
  (cd "$RUN_DIR/mesh" && start pilot-discovery env POD_NAMESPACE=istio-system POD_NAME=istiod-local \
    REVISION=default PILOT_ENABLE_K8S_SELECT_WORKLOAD_ENTRIES=true ${VANE_ISTIOD_ENV:-} \
    "$MESH_BIN/pilot-discovery" discovery \
    --kubeconfig="$KUBECONFIG_FILE" \
    --grpcAddr="127.0.0.1:$ISTIOD_GRPC" \
    --httpAddr="127.0.0.1:$ISTIOD_HTTP" \
    --httpsAddr="127.0.0.1:$https" \
    --secureGRPCAddr="127.0.0.1:$secure" \
    --monitoringAddr="127.0.0.1:$monitoring" \
    --shutdownDuration=1s \
    --log_output_level=default:info \
    $VANE_ISTIOD_FLAGS)
  start podrunner "$MESH_BIN/podrunner" --kubeconfig="$KUBECONFIG_FILE" --node="$MESH_NODE"

  {
    printf 'export VANE_ISTIOD_XDS=127.0.0.1:%s\n' "$ISTIOD_GRPC"
    printf 'export VANE_ISTIOD_HTTP=127.0.0.1:%s\n' "$ISTIOD_HTTP"
    printf 'export VANE_MESH_NODE=%s\n' "$MESH_NODE"
    printf 'export VANE_MESH_BIN=%s\n' "$MESH_BIN"
    printf 'export VANE_MESH_POD_CIDR=%s\n' "$(pod_cidr)"
  } >"$MESH_ENV"
  wait_for "istiod ready on 127.0.0.1:$ISTIOD_HTTP" "$START_TIMEOUT" istiod_ready
  wait_for "node $MESH_NODE Ready" "$START_TIMEOUT" node_ready
  alive podrunner || die "podrunner exited: $(tail -5 "$LOGS/podrunner.log")"
  log "mesh up in $((SECONDS - t0))s: istiod xDS 127.0.0.1:$ISTIOD_GRPC, node $MESH_NODE podCIDR $(pod_cidr)"
  cmd_env
}

cmd_stop() {
  local name pid
  for name in podrunner pilot-discovery; do
    [[ -f $PIDS/$name.pid ]] || continue
    pid=$(<"$PIDS/$name.pid")
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' </proc/"$pid"/cmdline | grep -q "$name"; then
      kill -TERM "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDS/$name.pid"
  done
  rm -f "$MESH_ENV"
}

cmd_env() {
  [[ -f $MESH_ENV ]] || die "no mesh in $RUN_DIR (run hack/mesh.sh start)"
  cat "$MESH_ENV"
  # shellcheck disable=SC2016
  printf 'export PATH=%q:"$PATH"\n' "$MESH_BIN"
}

case ${1:-} in
build) cmd_build ;;
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
*)
  sed -n '2,10s/^# \{0,1\}//p' "$0" >&2
  exit 2
  ;;
esac
