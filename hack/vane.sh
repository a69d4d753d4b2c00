#!/usr/bin/env bash
# vane.sh start|stop|restart|build: run vane's binary on the host against the
# local cluster of hack/cluster.sh (same VANE_RUN_DIR), registered through a
# MutatingWebhookConfiguration that calls it by URL over TLS. vane runs with
# the token of the ServiceAccount of manifests/, bound to exactly the RBAC
# of manifests/base/rbac.yaml, so a missing permission shows here too.
#
# Logs: $VANE_RUN_DIR/logs/vane.log. PID: $VANE_RUN_DIR/pids/vane.pid (so
# cluster.sh down stops it too).
#
# VANE_INSTANCE=N runs a further replica (vaneN.pid, vaneN.log, its own
# VANE_*_PORTs) beside the first: it shares the certificate directory and
# does not take over the webhook configuration, which calls the first.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR=${VANE_RUN_DIR:-/tmp/vane-cluster}
KUBECONFIG_FILE=${VANE_KUBECONFIG:-$RUN_DIR/kubeconfig}
WEBHOOK_PORT=${VANE_WEBHOOK_PORT:-19443}
PROBE_PORT=${VANE_PROBE_PORT:-18081}
METRICS_PORT=${VANE_METRICS_PORT:-18080}
VANE_BIN=${VANE_BIN:-$RUN_DIR/bin/vane}
NAME=vane${VANE_INSTANCE:-}
PIDFILE=$RUN_DIR/pids/$NAME.pid
LOGFILE=$RUN_DIR/logs/$NAME.log
eval "$("$ROOT/hack/cluster.sh" env)"
export KUBECONFIG=$KUBECONFIG_FILE

log() { printf '[vane.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

build() {
  mkdir -p "$(dirname "$VANE_BIN")"
  (cd "$ROOT" && go build -o "$VANE_BIN" ./cmd/webhook)
}

alive() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

stop() {
  alive || { rm -f "$PIDFILE"; return 0; }
  local pid; pid=$(cat "$PIDFILE")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  log "$NAME stopped"
}

start() {
  [[ -f $KUBECONFIG_FILE ]] || die "no cluster in $RUN_DIR: run hack/cluster.sh up first"
  alive && { log "vane already running (pid $(cat "$PIDFILE"))"; return 0; }
  [[ -x $VANE_BIN && ${VANE_SKIP_BUILD:-} == 1 ]] || build
  mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids"
  local webhook_args=(--webhook-config-name vane)
  if [[ -z ${VANE_INSTANCE:-} ]]; then
    sed "s|__URL__|https://127.0.0.1:$WEBHOOK_PORT/mutate-apps-v1-deployment|" "$ROOT/hack/local-webhook.yaml" |
      kubectl --kubeconfig "$KUBECONFIG_FILE" apply -f - >/dev/null
  else
    webhook_args=()
  fi
  service_account_kubeconfig "$RUN_DIR/vane.kubeconfig"
  KUBECONFIG=$RUN_DIR/vane.kubeconfig setsid "$VANE_BIN" \
    --leader-election-namespace vane-system \
    --cluster-name primary --remote-secrets-namespace vane-system \
    --webhook-host 127.0.0.1 --webhook-port "$WEBHOOK_PORT" \
    --cert-dir "$RUN_DIR/vane-certs" --self-signed-hosts 127.0.0.1 "${webhook_args[@]}" \
    --health-probe-bind-address "127.0.0.1:$PROBE_PORT" --metrics-bind-address "127.0.0.1:$METRICS_PORT" \
    --zap-log-level "${VANE_LOG_LEVEL:-info}" ${VANE_EXTRA_ARGS:-} >>"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 300); do
    alive || { tail -n 30 "$LOGFILE" >&2; die "vane exited"; }
    if curl -sf "http://127.0.0.1:$PROBE_PORT/readyz" >/dev/null 2>&1 && { [[ -n ${VANE_INSTANCE:-} ]] || registered; }; then
      log "vane ready (pid $(cat "$PIDFILE")), webhook https://127.0.0.1:$WEBHOOK_PORT, log $LOGFILE"
      return 0
    fi
    sleep 0.1
  done
  tail -n 30 "$LOGFILE" >&2
  die "vane not ready after 30s"
}

# service_account_kubeconfig FILE: the ServiceAccount and RBAC of
# manifests/, and a kubeconfig with a token of that ServiceAccount.
service_account_kubeconfig() {
  kubectl --kubeconfig "$KUBECONFIG_FILE" apply -f "$ROOT/manifests/base/namespace.yaml" >/dev/null
  kubectl --kubeconfig "$KUBECONFIG_FILE" apply -n vane-system -f "$ROOT/manifests/base/rbac.yaml" >/dev/null
  local token server ca
  token=$(kubectl --kubeconfig "$KUBECONFIG_FILE" create token vane -n vane-system --duration=48h)
  server=$(kubectl --kubeconfig "$KUBECONFIG_FILE" config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl --kubeconfig "$KUBECONFIG_FILE" config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  umask 077
  cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: vane, user: {token: "$token"}}]
contexts: [{name: vane, context: {cluster: local, user: vane, namespace: vane-system}}]
current-context: vane
KUBECONFIG
}

# registered: the API server really calls the webhook with the current CA. A
# server-side dry run of an opted-in Deployment with a bad strategy must be
# denied with vane's message (dry run: nothing is created).
registered() {
  local out
  out=$(kubectl --kubeconfig "$KUBECONFIG_FILE" create --dry-run=server -f - 2>&1 <<'PROBE' || true
apiVersion: apps/v1
kind: Deployment
metadata:
  name: vane-probe
  namespace: default
  labels: {vane.io/canary: enabled}
  annotations: {vane.io/strategy: "probe: true"}
spec:
  selector: {matchLabels: {app: vane-probe}}
  template:
    metadata: {labels: {app: vane-probe, version: v1}}
    spec: {containers: [{name: c, image: probe}]}
PROBE
)
  [[ $out == *"annotation vane.io/strategy"* ]]
}

case ${1:-} in
  build) build ;;
  start) start ;;
  stop) stop ;;
  kill) # a crash: SIGKILL, no graceful hand-over
    alive && kill -KILL "$(cat "$PIDFILE")"; rm -f "$PIDFILE" ;;
  restart) stop; start ;;
  *) echo "usage: $0 start|stop|restart|kill|build" >&2; exit 2 ;;
esac
