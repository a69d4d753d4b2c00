#!/usr/bin/env bash
# hack/member.sh — register a member cluster with vane the way Istio users
# register remote clusters: a Secret in vane's cluster, labelled
# istio/multiCluster: "true", holding a kubeconfig for the member (what
# `istioctl create-remote-secret --name NAME` emits).
#
#   hack/member.sh add NAME      apply manifests/remote into the member (webhook URL
#                                and caBundle of the local vane), then create the
#                                Secret vane-remote-secret-NAME in vane's cluster
#   hack/member.sh remove NAME [--purge]
#                                delete that Secret; --purge also removes from the
#                                member what `add` applied (the namespace stays)
#   hack/member.sh secret NAME   print the Secret (manifests/remote already applied
#                                in the member), for `kubectl apply --server-side -f -`
#
# vane's cluster: VANE_RUN_DIR (default /tmp/vane-cluster), where hack/vane.sh
# runs vane; VANE_KUBECONFIG (default $VANE_RUN_DIR/kubeconfig).
# The member: VANE_MEMBER_RUN_DIR (default /tmp/vane-cluster-NAME, i.e.
# `hack/cluster.sh up --name NAME`), VANE_MEMBER_KUBECONFIG (default
# $VANE_MEMBER_RUN_DIR/kubeconfig), VANE_MEMBER_SERVER (the API server address
# written into the Secret; default the one in the member's kubeconfig).
# The webhook: VANE_WEBHOOK_URL (default
# https://127.0.0.1:$VANE_WEBHOOK_PORT/mutate-apps-v1-deployment, port 19443).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAMESPACE=vane-system

log() { printf '[member.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,24s/^# \{0,1\}//p' "$0" >&2; exit 2; }

CMD=${1:-}
NAME=${2:-}
[[ -n $CMD && -n $NAME ]] || usage
PURGE=0
[[ ${3:-} == --purge && $CMD == remove ]] && PURGE=1
[[ -z ${3:-} || $PURGE == 1 ]] || usage
# The name is a Secret key and a kubeconfig context, as with istioctl.
[[ $NAME =~ ^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$ ]] ||
  die "member name '$NAME' must be lower-case letters, digits and '-' (at most 32)"

RUN_DIR=${VANE_RUN_DIR:-/tmp/vane-cluster}
PRIMARY_KUBECONFIG=${VANE_KUBECONFIG:-$RUN_DIR/kubeconfig}
MEMBER_RUN_DIR=${VANE_MEMBER_RUN_DIR:-/tmp/vane-cluster-$NAME}
MEMBER_KUBECONFIG=${VANE_MEMBER_KUBECONFIG:-$MEMBER_RUN_DIR/kubeconfig}
WEBHOOK_URL=${VANE_WEBHOOK_URL:-https://127.0.0.1:${VANE_WEBHOOK_PORT:-19443}/mutate-apps-v1-deployment}
SECRET=vane-remote-secret-$NAME
TIMEOUT=${VANE_START_TIMEOUT:-90}

# kubectl of hack/cluster.sh's cache.
eval "$(VANE_CLUSTER_NAME='' VANE_RUN_DIR="$RUN_DIR" "$ROOT/hack/cluster.sh" env)"
unset KUBECONFIG
primary() { kubectl --kubeconfig "$PRIMARY_KUBECONFIG" "$@"; }
member() { kubectl --kubeconfig "$MEMBER_KUBECONFIG" "$@"; }

# wait_output TIMEOUT WHAT COMMAND...: the first non-empty output of COMMAND.
wait_output() {
  local timeout=$1 what=$2 out deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until out=$("$@" 2>/dev/null) && [[ -n $out ]]; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
    sleep 0.2
  done
  printf '%s\n' "$out"
}

# apply_remote CABUNDLE: manifests/remote into the member, the webhook
# calling WEBHOOK_URL, through a kustomize overlay (as documented in
# manifests/remote/kustomization.yaml).
apply_remote() {
  local dir rel
  dir=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: dir is local
  trap "rm -rf '$dir'" RETURN
  rel=$(realpath --relative-to="$dir" "$ROOT/manifests/remote")
  cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$rel]
patches:
  - target: {kind: MutatingWebhookConfiguration, name: vane}
    patch: |-
      - {op: replace, path: /webhooks/0/clientConfig/url, value: "$WEBHOOK_URL"}
      - {op: add, path: /webhooks/0/clientConfig/caBundle, value: "$1"}
EOF
  member apply --server-side --force-conflicts --field-manager=vane-member -k "$dir" >/dev/null
}

# kubeconfig: for the member's API server, as vane-remote (its long-lived
# token), in the shape istioctl writes (cluster, context and user named NAME).
kubeconfig() {
  local token server ca
  token=$(wait_output "$TIMEOUT" "the token of vane-remote in the member (Secret vane-remote-token)" \
    member get secret vane-remote-token -n "$NAMESPACE" -o 'jsonpath={.data.token}')
  token=$(base64 -d <<<"$token")
  server=${VANE_MEMBER_SERVER:-$(member config view --raw --minify -o 'jsonpath={.clusters[0].cluster.server}')}
  ca=$(member config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}')
  [[ -n $server && -n $ca ]] || die "no server or certificate-authority-data in $MEMBER_KUBECONFIG"
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $NAME
  cluster:
    server: $server
    certificate-authority-data: $ca
contexts:
- name: $NAME
  context:
    cluster: $NAME
    user: $NAME
current-context: $NAME
users:
- name: $NAME
  user:
    token: $token
preferences: {}
EOF
}

# secret: the Secret `istioctl create-remote-secret --name NAME` would emit,
# under vane's name.
secret() {
  local config
  # shellcheck disable=SC2001 # indent every line
  config=$(kubeconfig | sed 's/^/    /')
  cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $SECRET
  namespace: $NAMESPACE
  labels:
    istio/multiCluster: "true"
  annotations:
    networking.istio.io/cluster: $NAME
type: Opaque
stringData:
  $NAME: |
$config
EOF
}

cmd_add() {
  [[ -f $PRIMARY_KUBECONFIG ]] || die "no cluster at $PRIMARY_KUBECONFIG (hack/cluster.sh up; hack/vane.sh start)"
  [[ -f $MEMBER_KUBECONFIG ]] || die "no member cluster at $MEMBER_KUBECONFIG (hack/cluster.sh up --name $NAME)"
  local ca
  ca=$(wait_output "$TIMEOUT" "the caBundle of MutatingWebhookConfiguration vane in vane's cluster (is vane running? hack/vane.sh start)" \
    primary get mutatingwebhookconfiguration vane -o 'jsonpath={.webhooks[0].clientConfig.caBundle}')
  primary get namespace "$NAMESPACE" >/dev/null || die "no namespace $NAMESPACE in vane's cluster (hack/vane.sh start creates it)"
  apply_remote "$ca"
  # Server-side: a client-side apply would copy the token into an annotation.
  secret | primary apply --server-side --force-conflicts --field-manager=vane-member -f - >/dev/null
  log "member $NAME registered: Secret $NAMESPACE/$SECRET in $PRIMARY_KUBECONFIG; its webhook calls $WEBHOOK_URL"
}

cmd_remove() {
  primary delete secret "$SECRET" -n "$NAMESPACE" --ignore-not-found >/dev/null
  log "Secret $NAMESPACE/$SECRET deleted"
  if ((PURGE)); then
    member delete mutatingwebhookconfiguration vane --ignore-not-found >/dev/null
    member delete clusterrolebinding vane-remote --ignore-not-found >/dev/null
    member delete clusterrole vane-remote --ignore-not-found >/dev/null
    member delete -n "$NAMESPACE" secret vane-remote-token --ignore-not-found >/dev/null
    member delete -n "$NAMESPACE" serviceaccount vane-remote --ignore-not-found >/dev/null
    log "member $NAME purged: webhook configuration, vane-remote and its token and RBAC removed"
  fi
}

case $CMD in
add) cmd_add ;;
remove) cmd_remove ;;
secret) secret ;;
*) usage ;;
esac
