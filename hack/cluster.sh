#!/usr/bin/env bash
# hack/cluster.sh — a local Kubernetes control plane made of plain processes
# (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok), all
# built from Go modules pinned in hack/tools. No Docker, no kubelet: kwok fakes
# the nodes and the pods on them.
#
#   hack/cluster.sh build   build the binaries into the cache (no-op when up to date)
#   hack/cluster.sh up      build if needed, start the cluster, print env exports
#   hack/cluster.sh up --mesh   the same plus istiod and pods that answer (hack/mesh.sh)
#   hack/cluster.sh down    stop exactly the processes `up` recorded, remove run dir
#   hack/cluster.sh env     print `export KUBECONFIG=... PATH=...` for eval
#   hack/cluster.sh status  print each component's pid and whether it is alive
#   hack/cluster.sh stop-apiserver   stop only kube-apiserver (data and the rest stay)
#   hack/cluster.sh start-apiserver  start it again with the same flags, wait for /readyz
#
# Every command takes --name NAME (or VANE_CLUSTER_NAME): a second cluster
# beside the default one, in /tmp/vane-cluster-NAME on its own ports.
# See hack/README.md for ports, environment variables and measured figures.
set -euo pipefail

CMD=${1:-}
(($# == 0)) || shift
CLUSTER_NAME=${VANE_CLUSTER_NAME:-}
MESH=0
while (($#)); do
  case $1 in
  --name) (($# >= 2)) || { echo "cluster.sh: --name needs a value" >&2; exit 2; }; CLUSTER_NAME=$2; shift 2 ;;
  --name=*) CLUSTER_NAME=${1#--name=}; shift ;;
  --mesh) MESH=1; shift ;;
  *) echo "cluster.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -n $CLUSTER_NAME && ! $CLUSTER_NAME =~ ^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$ ]]; then
  echo "cluster.sh: cluster name '$CLUSTER_NAME' must be lower-case letters, digits and '-' (at most 32)" >&2
  exit 2
fi

K8S_VERSION=v1.37.2
ISTIO_API_MODULE=istio.io/api@v1.31.4
GATEWAY_API_MODULE=sigs.k8s.io/gateway-api@v1.6.3
KWOK_MODULE=sigs.k8s.io/kwok@v0.8.0

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_DIR=$ROOT/hack/tools
SELF=$ROOT/hack/cluster.sh
BIN=${VANE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vane/k8s-$K8S_VERSION/bin}
if [[ -z $CLUSTER_NAME ]]; then
  RUN_DIR=${VANE_RUN_DIR:-/tmp/vane-cluster}
  ETCD_PORT=${VANE_ETCD_PORT:-23790}
  ETCD_PEER_PORT=${VANE_ETCD_PEER_PORT:-23800}
  APISERVER_PORT=${VANE_APISERVER_PORT:-16443}
  CONTEXT=vane
else
  # A named cluster's default ports come from its name: API server in
  # 17000-17999, etcd in 24000-25999, all apart from the unnamed cluster's
  # (16443, 23790, 23800) and hack/vane.sh's (18080, 18081, 19443). Two
  # names may still meet; `up` checks the ports and says so.
  _slot=$(($(printf '%s' "$CLUSTER_NAME" | cksum | cut -d' ' -f1) % 1000))
  RUN_DIR=${VANE_RUN_DIR:-/tmp/vane-cluster-$CLUSTER_NAME}
  ETCD_PORT=${VANE_ETCD_PORT:-$((24000 + 2 * _slot))}
  ETCD_PEER_PORT=${VANE_ETCD_PEER_PORT:-$((24001 + 2 * _slot))}
  APISERVER_PORT=${VANE_APISERVER_PORT:-$((17000 + _slot))}
  CONTEXT=$CLUSTER_NAME
  unset _slot
fi
# Children (the watchdog's `down`, hack/mesh.sh) must act on this cluster.
export VANE_RUN_DIR=$RUN_DIR VANE_CLUSTER_NAME=$CLUSTER_NAME
export VANE_ETCD_PORT=$ETCD_PORT VANE_ETCD_PEER_PORT=$ETCD_PEER_PORT VANE_APISERVER_PORT=$APISERVER_PORT
START_TIMEOUT=${VANE_START_TIMEOUT:-90}
# Extra flags appended to a component's command line, e.g.
# VANE_APISERVER_FLAGS="--v=4".
VANE_ETCD_FLAGS=${VANE_ETCD_FLAGS:-}
VANE_APISERVER_FLAGS=${VANE_APISERVER_FLAGS:-}
VANE_CONTROLLER_MANAGER_FLAGS=${VANE_CONTROLLER_MANAGER_FLAGS:-}
VANE_SCHEDULER_FLAGS=${VANE_SCHEDULER_FLAGS:-}
VANE_KWOK_FLAGS=${VANE_KWOK_FLAGS:-}

BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
# Start order. `down` stops clients first, then the API server, then etcd.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

PKI=$RUN_DIR/pki
LOGS=$RUN_DIR/logs
PIDS=$RUN_DIR/pids
KUBECONFIG_FILE=$RUN_DIR/kubeconfig

export PATH="$BIN:$PATH"

log() { printf '[cluster.sh %s] %s\n' "$(date +%H:%M:%S.%2N)" "$*" >&2; }
T0=$EPOCHREALTIME
elapsed() { awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN { printf "%.1fs", a - b }'; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- build ----

# Stamp the Kubernetes version into the binaries the way its release build
# does (otherwise they report v0.0.0-master and `kubectl version` errors).
K8S_LDFLAGS=""
for _pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $_pkg.gitVersion=$K8S_VERSION -X $_pkg.gitMajor=1 -X $_pkg.gitMinor=37"
  K8S_LDFLAGS+=" -X $_pkg.gitTreeState=clean -X $_pkg.buildDate=2026-11-01T00:00:00Z"
done
unset _pkg

# Identifies what the cache holds: the tool module's pins, the etcd wrapper,
# the link flags and the Go version. A change of any of them rebuilds.
build_stamp() {
  {
    cat "$TOOLS_DIR/go.mod" "$TOOLS_DIR/go.sum" "$TOOLS_DIR/etcd/main.go"
    echo "$K8S_LDFLAGS"
    go env GOVERSION
  } | sha256sum | cut -c1-16
}

binaries_present() {
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x $BIN/$b ]] || return 1
  done
}

binaries_current() {
  binaries_present && [[ -f $BIN/.stamp && $(<"$BIN/.stamp") == "$(build_stamp)" ]]
}

cmd_build() {
  command -v go >/dev/null || die "go is not on PATH"
  if binaries_current; then
    return 0
  fi
  mkdir -p "$BIN"
  log "building Kubernetes $K8S_VERSION, etcd and kwok into $BIN (cold: ~12 min on 2 cores)"
  local start=$SECONDS
  rm -f "$BIN/.stamp"
  (
    cd "$TOOLS_DIR"
    GOWORK=off go build -ldflags="$K8S_LDFLAGS" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl \
      sigs.k8s.io/kwok/cmd/kwok \
      ./etcd
  )
  binaries_present || die "build finished but binaries are missing from $BIN"
  build_stamp >"$BIN/.stamp"
  log "built in $((SECONDS - start))s"
}

# Directory of a module in the module cache, downloading it if needed. Run
# outside any module so no go.mod/go.sum is touched.
module_dir() {
  local dir
  dir=$(cd / && GOWORK=off GOFLAGS=-mod=mod go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [[ -n $dir && -d $dir ]] || die "could not locate module $1 (go mod download failed)"
  printf '%s\n' "$dir"
}

# ------------------------------------------------------------ processes ----

pid_of() { # prints the recorded pid of $1 if that process is still alive and is ours
  local f=$PIDS/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  is_ours "$pid" "$1" || return 1
  printf '%s\n' "$pid"
}

# is_ours PID NAME: the pid is alive and its command line still mentions NAME
# (guards against pid reuse after a reboot or a crash).
is_ours() {
  local cmdline
  [[ -r /proc/$1/cmdline ]] || return 1
  cmdline=$(tr '\0' ' ' </proc/"$1"/cmdline 2>/dev/null) || return 1
  [[ $cmdline == *"$2"* || ($2 == watchdog && $cmdline == *cluster.sh*) ]]
}

# start NAME ARGS...: run ARGS in its own session (so a Ctrl-C in the terminal
# that ran `up` never reaches it), log to logs/NAME.log, pid to pids/NAME.pid.
start() {
  local name=$1
  shift
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$PIDS/$name.pid"
  STARTED+=("$name")
  # Until the forked shell has exec'ed the binary its command line is this
  # script's, and check_alive would take it for gone: wait for the exec.
  for _ in $(seq 100); do
    is_ours "$pid" "$name" || ! alive_pid "$pid" && break
    sleep 0.02
  done
}

tail_logs() {
  local n=${1:-40} f
  for f in "$LOGS"/*.log; do
    [[ -f $f ]] || continue
    printf '\n===== %s (last %s lines) =====\n' "$f" "$n" >&2
    tail -n "$n" "$f" >&2 || true
  done
}

alive_pid() { # running, not a zombie
  [[ -e /proc/$1 ]] && [[ $(awk '{print $3}' /proc/"$1"/stat 2>/dev/null) != Z ]]
}

# stop_pids TIMEOUT NAME...: TERM the recorded pids of NAMEs, wait up to
# TIMEOUT seconds, then KILL what is left.
stop_pids() {
  local timeout=$1 name pid pids=() names=()
  shift
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      [[ $pid == "$$" ]] && continue # the watchdog execs into `down`
      pids+=("$pid")
      names+=("$name")
    fi
  done
  ((${#pids[@]})) || return 0
  log "stopping ${names[*]}"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  local deadline=$((SECONDS + timeout)) alive
  while :; do
    alive=()
    for pid in "${pids[@]}"; do
      alive_pid "$pid" && alive+=("$pid")
    done
    ((${#alive[@]})) || break
    if ((SECONDS >= deadline)); then
      log "killing ${alive[*]} (still alive ${timeout}s after SIGTERM)"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.05
  done
  STOPPED+=("${pids[@]}")
}

# The stopped processes were reparented to init. Some inits reap lazily (this
# sandbox's every ~2s): wait up to 3s so `pgrep` shows no <defunct> entries.
wait_reaped() {
  local i pid left
  for ((i = 0; i < 60; i++)); do
    left=0
    for pid in "${STOPPED[@]}"; do [[ -e /proc/$pid ]] && left=1; done
    ((left)) || return 0
    sleep 0.05
  done
}

STOPPED=()

# Stop every recorded component, clients first: the API server shuts down in
# about a second while etcd is up, but hangs if etcd goes first.
# Any other pids/NAME.pid (e.g. hack/vane.sh's vane.pid) is a client of the
# API server and goes in the first batch.
stop_recorded() {
  [[ -d $PIDS ]] || return 0
  local f name clients=()
  for f in "$PIDS"/*.pid; do
    [[ -f $f ]] || continue
    name=$(basename "$f" .pid)
    [[ $name == kube-apiserver || $name == etcd ]] || clients+=("$name")
  done
  ((${#clients[@]} == 0)) || stop_pids 10 "${clients[@]}"
  stop_pids 15 kube-apiserver
  stop_pids 10 etcd
}

# ------------------------------------------------------------------ pki ----

gen_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }

gen_ca() { # gen_ca NAME CN
  gen_key "$PKI/$1.key"
  openssl req -x509 -new -key "$PKI/$1.key" -out "$PKI/$1.crt" -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

gen_cert() { # gen_cert NAME CA SUBJECT EKU [SAN]
  local name=$1 ca=$2 subj=$3 eku=$4 san=${5:-}
  gen_key "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z $san ]] || echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

write_kubeconfig() { # write_kubeconfig FILE CERTNAME
  local b64='base64 -w0'
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CONTEXT
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $($b64 <"$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 <"$PKI/$2.crt")
    client-key-data: $($b64 <"$PKI/$2.key")
contexts:
- name: $CONTEXT
  context:
    cluster: $CONTEXT
    user: $2
current-context: $CONTEXT
EOF
  chmod 600 "$1"
}

# parallel CMD...: run CMDs (each one word-split string) concurrently; fail
# if any fails.
parallel() {
  local c p pids=() rc=0
  for c in "$@"; do
    # shellcheck disable=SC2086
    $c &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

make_pki() {
  mkdir -p "$PKI"
  gen_ca ca vane-ca &
  gen_ca front-proxy-ca vane-front-proxy-ca &
  gen_key "$PKI/sa.key" &
  wait
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  local pids=() p
  gen_cert apiserver ca "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" &
  pids+=($!)
  gen_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth &
  pids+=($!)
  # Components get their own names but system:masters, so RBAC never gets in
  # the way of a test cluster.
  gen_cert admin ca "/O=system:masters/CN=vane-admin" clientAuth &
  pids+=($!)
  gen_cert controller-manager ca "/O=system:masters/CN=vane:kube-controller-manager" clientAuth &
  pids+=($!)
  gen_cert scheduler ca "/O=system:masters/CN=vane:kube-scheduler" clientAuth &
  pids+=($!)
  gen_cert kwok ca "/O=system:masters/CN=vane:kwok" clientAuth &
  pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || die "generating certificates failed"; done
  write_kubeconfig "$KUBECONFIG_FILE" admin
  write_kubeconfig "$RUN_DIR/controller-manager.kubeconfig" controller-manager
  write_kubeconfig "$RUN_DIR/scheduler.kubeconfig" scheduler
  write_kubeconfig "$RUN_DIR/kwok.kubeconfig" kwok
}

# ------------------------------------------------------------------- up ----

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

apiserver_ready() {
  curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1
}

# All recorded components alive?
all_alive() {
  local c
  for c in "${COMPONENTS[@]}"; do
    pid_of "$c" >/dev/null || return 1
  done
}

check_alive() { # die with logs if a started component exited
  local c
  for c in "${STARTED[@]}"; do
    [[ $c == watchdog ]] && continue
    if ! pid_of "$c" >/dev/null; then
      log "$c exited; last lines of $LOGS/$c.log:"
      tail -n 40 "$LOGS/$c.log" >&2 || true
      die "$c exited during startup"
    fi
  done
}

wait_for() { # wait_for DESCRIPTION TIMEOUT COMMAND...
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    check_alive
    if ((SECONDS >= deadline)); then
      tail_logs 40
      die "timed out after ${timeout}s waiting for $what (logs above, full logs in $LOGS)"
    fi
    sleep 0.1
  done
}

write_kwok_config() {
  local kwok_dir stage f
  kwok_dir=$(module_dir "$KWOK_MODULE")
  : >"$RUN_DIR/kwok.yaml"
  for stage in node/fast node/heartbeat-with-lease pod/fast; do
    while read -r f; do
      { echo "---"; cat "$kwok_dir/kustomize/stage/$stage/$f"; } >>"$RUN_DIR/kwok.yaml"
    done < <(sed -n 's/^- \(.*\.yaml\)$/\1/p' "$kwok_dir/kustomize/stage/$stage/kustomization.yaml")
  done
  grep -q 'kind: Stage' "$RUN_DIR/kwok.yaml" || die "no kwok stages found in $kwok_dir/kustomize/stage"
}

create_nodes() {
  local i
  for i in 0 1; do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
status:
  allocatable: {cpu: "1000", memory: 1Ti, pods: "1000"}
  capacity: {cpu: "1000", memory: 1Ti, pods: "1000"}
EOF
  done | kubectl_ apply -f - >/dev/null
}

# CRD manifests: Istio's and the Gateway API's standard channel, from the Go
# module cache (downloaded if missing).
locate_crds() {
  ISTIO_CRDS=$(module_dir "$ISTIO_API_MODULE")/kubernetes/customresourcedefinitions.gen.yaml
  GATEWAY_CRDS=$(module_dir "$GATEWAY_API_MODULE")/config/crd/standard
  [[ -f $ISTIO_CRDS ]] || die "missing $ISTIO_CRDS"
  [[ -d $GATEWAY_CRDS ]] || die "missing $GATEWAY_CRDS"
}

apply_manifest() { # apply_manifest NAME PATH
  kubectl_ apply --server-side --force-conflicts --field-manager=vane-cluster -f "$2" >"$LOGS/$1.log" 2>&1 ||
    { cat "$LOGS/$1.log" >&2; log "applying $2 failed"; return 1; }
}

# The API server digests CRDs one by one; two streams keep both cores busy.
install_crds() {
  parallel "apply_manifest crds-istio $ISTIO_CRDS" "apply_manifest crds-gateway-api $GATEWAY_CRDS"
}

print_env() {
  printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_FILE"
  # shellcheck disable=SC2016 # $PATH is for the shell that evals this
  printf 'export PATH=%q:"$PATH"\n' "$BIN"
  # With the mesh (hack/mesh.sh start): istiod's xDS address, traffic on PATH.
  if [[ -f $RUN_DIR/mesh.env ]]; then
    bash "$ROOT/hack/mesh.sh" env
  fi
}

UP_DONE=0
STARTED=()
up_cleanup() {
  local rc=$?
  ((UP_DONE)) && return 0
  log "up failed (exit $rc); stopping what it started"
  stop_recorded
  log "logs kept in $LOGS"
}

cmd_up() {
  cmd_build
  if [[ -f $KUBECONFIG_FILE ]] && all_alive && apiserver_ready; then
    log "cluster in $RUN_DIR is already running"
    print_env
    return 0
  fi
  if [[ -d $PIDS ]]; then
    log "stale run dir $RUN_DIR: stopping leftovers and starting afresh"
    stop_recorded
  fi
  local p
  for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT"; do
    ! port_in_use "$p" || die "port 127.0.0.1:$p is in use (another cluster? set VANE_APISERVER_PORT/VANE_ETCD_PORT/VANE_ETCD_PEER_PORT or VANE_RUN_DIR)"
  done

  T0=$EPOCHREALTIME
  rm -rf "$RUN_DIR"
  mkdir -p "$RUN_DIR" "$LOGS" "$PIDS" "$RUN_DIR/flexvolume"
  trap up_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  make_pki
  write_kwok_config
  locate_crds

  # shellcheck disable=SC2086 # *_FLAGS are intentionally word-split
  start etcd "$BIN/etcd" \
    --name=vane \
    --data-dir="$RUN_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="vane=http://127.0.0.1:$ETCD_PEER_PORT" \
    --heartbeat-interval=10 \
    --election-timeout=100 \
    --unsafe-no-fsync \
    --log-level=warn \
    $VANE_ETCD_FLAGS

  # SC2054: the commas are inside flag values; SC2206: the flags are meant to split.
  # shellcheck disable=SC2054,SC2206
  local apiserver=("$BIN/kube-apiserver"
    --etcd-servers="http://127.0.0.1:$ETCD_PORT"
    --bind-address=127.0.0.1
    --advertise-address=127.0.0.1
    --secure-port="$APISERVER_PORT"
    --endpoint-reconciler-type=none
    --tls-cert-file="$PKI/apiserver.crt"
    --tls-private-key-file="$PKI/apiserver.key"
    --client-ca-file="$PKI/ca.crt"
    --authorization-mode=Node,RBAC
    --allow-privileged=true
    --service-cluster-ip-range=10.96.0.0/16
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
    --service-account-key-file="$PKI/sa.pub"
    --service-account-signing-key-file="$PKI/sa.key"
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt"
    --requestheader-allowed-names=front-proxy-client
    --requestheader-username-headers=X-Remote-User
    --requestheader-group-headers=X-Remote-Group
    --requestheader-extra-headers-prefix=X-Remote-Extra-
    --proxy-client-cert-file="$PKI/front-proxy-client.crt"
    --proxy-client-key-file="$PKI/front-proxy-client.key"
    # Without it a SIGTERM waits ~60s for the other components' watches
    # (stop-apiserver stops it while they run); with it: ~2s.
    --shutdown-watch-termination-grace-period=1s
    $VANE_APISERVER_FLAGS)
  # start-apiserver runs exactly this again.
  printf '%s\0' "${apiserver[@]}" >"$RUN_DIR/kube-apiserver.args"
  start kube-apiserver "${apiserver[@]}"

  # Controller manager and scheduler wait for the API server on their own;
  # starting them now overlaps their start-up with the API server's.
  # --secure-port=0: no health/metrics endpoint, so no port clashes between
  # clusters and no authn/authz delegation lookups.
  # shellcheck disable=SC2086
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$RUN_DIR/controller-manager.kubeconfig" \
    --secure-port=0 \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=false \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" \
    --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --flex-volume-plugin-dir="$RUN_DIR/flexvolume" \
    $VANE_CONTROLLER_MANAGER_FLAGS

  # shellcheck disable=SC2086
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$RUN_DIR/scheduler.kubeconfig" \
    --secure-port=0 \
    --leader-elect=false \
    $VANE_SCHEDULER_FLAGS

  # shellcheck disable=SC2086
  start kwok "$BIN/kwok" \
    --kubeconfig="$RUN_DIR/kwok.kubeconfig" \
    --config="$RUN_DIR/kwok.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 \
    --cidr=10.244.0.0/16 \
    --node-ip=127.0.0.1 \
    $VANE_KWOK_FLAGS

  # Tear the cluster down when the owning process dies (used by the Go e2e
  # framework: covers `go test -timeout` panics and SIGKILL).
  if [[ -n ${VANE_OWNER_PID:-} ]]; then
    start watchdog bash "$SELF" _watchdog
  fi

  wait_for "kube-apiserver /readyz on 127.0.0.1:$APISERVER_PORT" "$START_TIMEOUT" apiserver_ready
  log "kube-apiserver ready after $(elapsed)"

  parallel create_nodes install_crds || die "creating nodes or installing CRDs failed"
  log "nodes and CRDs created after $(elapsed)"
  wait_for "kwok nodes to be Ready" "$START_TIMEOUT" nodes_ready
  wait_for "CRDs to be Established" "$START_TIMEOUT" crds_established
  wait_for "the default ServiceAccount" "$START_TIMEOUT" default_sa_exists

  UP_DONE=1
  trap - EXIT INT TERM
  log "cluster up in $(elapsed): run dir $RUN_DIR, API https://127.0.0.1:$APISERVER_PORT"
  print_env
}

nodes_ready() {
  local out
  out=$(kubectl_ get nodes -l type=kwok \
    -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null) || return 1
  [[ $(grep -c '^True$' <<<"$out") -ge 2 ]]
}

default_sa_exists() { kubectl_ get serviceaccount default -n default -o name >/dev/null 2>&1; }

crds_established() {
  local out
  out=$(kubectl_ get crd \
    -o 'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\n"}{end}' 2>/dev/null) || return 1
  [[ -n $out ]] && ! grep -qv '=True$' <<<"$out"
}

# ----------------------------------------------------------------- down ----

cmd_down() {
  if [[ ! -d $RUN_DIR ]]; then
    log "no cluster in $RUN_DIR"
    return 0
  fi
  stop_recorded
  wait_reaped
  # Only remove what looks like our run dir.
  if [[ -d $RUN_DIR/pids || -f $RUN_DIR/kubeconfig || -d $RUN_DIR/logs ]]; then
    rm -rf "$RUN_DIR"
  else
    die "$RUN_DIR does not look like a cluster.sh run dir; not removing it"
  fi
  log "cluster in $RUN_DIR is down"
}

cmd_status() {
  local c pid rc=0 extra=() f
  for f in "$PIDS"/*.pid; do
    [[ -f $f ]] || continue
    c=$(basename "$f" .pid)
    [[ " ${COMPONENTS[*]} watchdog " == *" $c "* ]] || extra+=("$c")
  done
  for c in "${COMPONENTS[@]}" watchdog "${extra[@]}"; do
    if pid=$(pid_of "$c"); then
      printf '%-24s running  pid %s\n' "$c" "$pid"
    elif [[ $c == kube-apiserver && -f $RUN_DIR/kube-apiserver.stopped ]]; then
      printf '%-24s stopped  (hack/cluster.sh stop-apiserver)\n' "$c"
      rc=1
    elif [[ -f $PIDS/$c.pid ]]; then
      printf '%-24s DEAD     pid %s\n' "$c" "$(<"$PIDS/$c.pid")"
      rc=1
    elif [[ $c != watchdog ]]; then
      printf '%-24s not started\n' "$c"
      rc=1
    fi
  done
  return $rc
}

# stop-apiserver / start-apiserver: make the cluster unreachable and bring it
# back (e.g. a member cluster lost mid-release). etcd, the other components,
# the data and the certificates stay; start-apiserver runs the command line
# `up` recorded in kube-apiserver.args, so the port and flags are the same.
cmd_stop_apiserver() {
  [[ -f $RUN_DIR/kube-apiserver.args ]] || die "no cluster in $RUN_DIR"
  if ! pid_of kube-apiserver >/dev/null; then
    log "kube-apiserver in $RUN_DIR is not running"
    return 0
  fi
  stop_pids 15 kube-apiserver
  wait_reaped
  rm -f "$PIDS/kube-apiserver.pid"
  : >"$RUN_DIR/kube-apiserver.stopped"
  log "kube-apiserver in $RUN_DIR stopped"
}

cmd_start_apiserver() {
  local args=() port a
  [[ -f $RUN_DIR/kube-apiserver.args ]] || die "no cluster in $RUN_DIR"
  mapfile -d '' args <"$RUN_DIR/kube-apiserver.args"
  for a in "${args[@]}"; do
    [[ $a == --secure-port=* ]] && port=${a#--secure-port=}
  done
  [[ -n ${port:-} ]] || die "no --secure-port in $RUN_DIR/kube-apiserver.args"
  APISERVER_PORT=$port
  if pid_of kube-apiserver >/dev/null; then
    log "kube-apiserver in $RUN_DIR is already running"
  else
    ! port_in_use "$port" || die "port 127.0.0.1:$port is in use"
    STARTED=()
    T0=$EPOCHREALTIME
    start kube-apiserver "${args[@]}"
  fi
  rm -f "$RUN_DIR/kube-apiserver.stopped"
  wait_for "kube-apiserver /readyz on 127.0.0.1:$port" "$START_TIMEOUT" apiserver_ready
  log "kube-apiserver in $RUN_DIR ready after $(elapsed)"
}

cmd_watchdog() {
  local owner=$1
  while kill -0 "$owner" 2>/dev/null; do sleep 1; done
  exec bash "$SELF" down
}

case $CMD in
build) cmd_build ;;
up)
  if ((MESH)); then
    bash "$ROOT/hack/mesh.sh" build
    cmd_up >/dev/null
    bash "$ROOT/hack/mesh.sh" start >/dev/null
    print_env
  else
    cmd_up
  fi
  ;;
down) cmd_down ;;
env) print_env ;;
status) cmd_status ;;
stop-apiserver) cmd_stop_apiserver ;;
start-apiserver) cmd_start_apiserver ;;
_watchdog) cmd_watchdog "${VANE_OWNER_PID:?}" ;;
*)
  sed -n '2,19s/^# \{0,1\}//p' "$0" >&2
  exit 2
  ;;
esac
