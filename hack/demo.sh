#!/usr/bin/env bash
# demo.sh [weight|header|multicluster|all]: the seed's scenarios on a local cluster.
# Starts the control plane and vane (registered over TLS), deploys the seed's
# dubbo3 app as plain opted-in Deployments, edits the provider's version
# v1 → v2 as `kubectl edit` would, and follows the release with
# `kubectl vane status --watch` until it is Healthy.
#   weight (default): VirtualService, DestinationRule and Gateway of
#           rollouts/v1; 5% → pause → 50% → pause → promoted.
#   header: rollouts-legacy/v1; a `lane: test-v2` route to v2, waiting for
#           `kubectl vane promote`.
#   multicluster: seed 003 across two control planes: v1 and the mesh config
#           in vane's cluster, v2 opted in in member cluster b (registered
#           by a remote Secret); 20% → 50% → promoted → v1 scaled down.
# Everything it started is stopped at the end (KEEP=1 leaves it running).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export VANE_RUN_DIR=${VANE_RUN_DIR:-/tmp/vane-demo}

cleanup() {
  if [[ ${KEEP:-} == 1 ]]; then
    echo "cluster left running: eval \"\$(VANE_RUN_DIR=$VANE_RUN_DIR hack/cluster.sh env)\"; stop it with VANE_RUN_DIR=$VANE_RUN_DIR make down"
    return
  fi
  hack/vane.sh stop || true
  hack/cluster.sh down >/dev/null || true
  [[ -d $VANE_RUN_DIR-b ]] && VANE_RUN_DIR=$VANE_RUN_DIR-b hack/cluster.sh down --name b >/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) in $VANE_RUN_DIR"
hack/cluster.sh up >/dev/null
eval "$(hack/cluster.sh env)"
kubectl get nodes

say "vane: webhook + controller, registered through a MutatingWebhookConfiguration over TLS"
hack/vane.sh start
go build -o "$VANE_RUN_DIR/bin/kubectl-vane" ./cmd/kubectl-vane
export PATH=$VANE_RUN_DIR/bin:$PATH   # kubectl finds the plugin: kubectl vane ...

edit_version() { # edit_version NAMESPACE VERSION IMAGE_TAG
  kubectl -n "$1" patch deploy dubbo3-provider --type=json -p "[
    {\"op\":\"replace\",\"path\":\"/spec/template/metadata/labels/version\",\"value\":\"$2\"},
    {\"op\":\"replace\",\"path\":\"/spec/template/spec/containers/0/image\",\"value\":\"release-ci.daocloud.io/mspider/spring-dubbo3-provider:$3\"}]"
  echo "spec.paused after the edit: $(kubectl -n "$1" get deploy dubbo3-provider -o jsonpath='{.spec.paused}')"
}

weight() {
  say "the seed's app (rollouts/v1) as plain Deployments"
  kubectl apply -f examples/weight/namespace.yaml
  kubectl apply -f examples/weight/
  kubectl -n demo rollout status deploy/dubbo3-provider --timeout=60s
  kubectl -n demo rollout status deploy/dubbo3-consumer --timeout=60s
  kubectl -n demo get deploy,virtualservice,destinationrule,gateway

  say "kubectl edit deploy/dubbo3-provider: version v1 → v2 (and the v0.3 image)"
  edit_version demo v2 v0.3

  say "kubectl vane status --watch dubbo3-provider"
  kubectl vane status --watch dubbo3-provider -n demo

  say "after the release"
  kubectl -n demo get deploy -o wide
  kubectl -n demo get virtualservice provider -o jsonpath='{range .spec.http[0].route[*]}{.destination.subset}={.weight} {end}{"\n"}'
  kubectl -n demo get destinationrule dubbo-provider -o jsonpath='{range .spec.subsets[*]}{.name}={.labels} {end}{"\n"}'
  say "kubectl describe deploy/dubbo3-provider (its events)"
  kubectl -n demo get events --field-selector involvedObject.name=dubbo3-provider,involvedObject.kind=Deployment --sort-by=.metadata.creationTimestamp -o custom-columns=REASON:.reason,MESSAGE:.message | grep -v ScalingReplicaSet
}

header() {
  say "the seed's header strategy (rollouts-legacy/v1) on a plain Deployment"
  kubectl apply -f examples/header/namespace.yaml
  kubectl apply -f examples/header/
  kubectl -n demo-header rollout status deploy/dubbo3-provider --timeout=60s

  say "kubectl edit deploy/dubbo3-provider: version v1 → v2"
  edit_version demo-header v2 v0.3
  for _ in $(seq 100); do
    [[ $(kubectl -n demo-header get deploy dubbo3-provider -o jsonpath='{.metadata.annotations.vane\.io/status}') == *'"phase":"Paused"'* ]] && break
    sleep 0.1
  done
  say "kubectl vane status dubbo3-provider: the lane is open, the release waits for a person"
  kubectl vane status dubbo3-provider -n demo-header
  kubectl -n demo-header get virtualservice provider -o jsonpath='{range .spec.http[*]}{.name}{" "}{.match}{" → "}{.route[*].destination.host}{"\n"}{end}'

  say "kubectl vane promote dubbo3-provider"
  kubectl vane promote dubbo3-provider -n demo-header
  kubectl vane status --watch dubbo3-provider -n demo-header
}

multicluster() {
  local b=$VANE_RUN_DIR-b
  say "a second control plane, cluster b, beside vane's (in $b)"
  VANE_RUN_DIR=$b hack/cluster.sh up --name b >/dev/null
  say "register b: manifests/remote in b, a remote Secret (istio/multiCluster=true) in vane's cluster"
  VANE_MEMBER_RUN_DIR=$b hack/member.sh add b
  kubectl -n vane-system get secrets -l istio/multiCluster=true

  say "seed 003 in vane's cluster: helloworld v1, the DestinationRule, Gateway and VirtualService (80/20)"
  kubectl apply -f examples/multicluster/primary.yaml
  kubectl -n gray-demo rollout status deploy/helloworld-v1 --timeout=60s

  say "in cluster b: helloworld v2, opted in (a side-by-side release: only the weights move)"
  KUBECONFIG=$b/kubeconfig kubectl apply -f examples/multicluster/member.yaml
  for _ in $(seq 300); do
    [[ $(KUBECONFIG=$b/kubeconfig kubectl -n gray-demo get deploy helloworld-v2 -o jsonpath='{.metadata.annotations.vane\.io/status}') == *'"phase":"Paused"'* ]] && break
    sleep 0.1
  done
  say "kubectl vane status helloworld-v2 (against cluster b): waiting for a person at 50%"
  KUBECONFIG=$b/kubeconfig kubectl vane status helloworld-v2 -n gray-demo
  kubectl -n gray-demo get virtualservice gray-demo-vs -o jsonpath='{range .spec.http[0].route[*]}{.destination.subset}={.weight} {end}{"\n"}'

  say "kubectl vane promote helloworld-v2 (against cluster b)"
  KUBECONFIG=$b/kubeconfig kubectl vane promote helloworld-v2 -n gray-demo
  KUBECONFIG=$b/kubeconfig kubectl vane status --watch helloworld-v2 -n gray-demo

  say "after the release: all traffic on v2 in cluster b, v1 in vane's cluster scaled to zero"
  kubectl -n gray-demo get virtualservice gray-demo-vs -o jsonpath='{range .spec.http[0].route[*]}{.destination.subset}={.weight} {end}{"\n"}'
  kubectl -n gray-demo get deploy helloworld-v1
  KUBECONFIG=$b/kubeconfig kubectl -n gray-demo get deploy helloworld-v2
}

case ${1:-weight} in
  weight) weight ;;
  header) header ;;
  multicluster) multicluster ;;
  all) weight; header; multicluster ;;
  *) echo "usage: $0 [weight|header|multicluster|all]" >&2; exit 2 ;;
esac
