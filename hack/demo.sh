#!/usr/bin/env bash
# demo.sh: the seed's weight scenario on a local cluster. Starts the control
# plane and vane (registered over TLS), deploys the seed's dubbo3 provider and
# consumer as plain opted-in Deployments with their VirtualServices,
# DestinationRules and Gateway, edits the provider's version v1 → v2 as
# `kubectl edit` would, and prints every step's weights and Ready pods per
# version until the release is Healthy. Everything it started is stopped at
# the end (KEEP=1 leaves the cluster running).
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
go build -o "$VANE_RUN_DIR/bin/watch" ./hack/watch

say "the seed's app (rollouts/v1) as plain Deployments"
kubectl apply -f examples/weight/namespace.yaml
kubectl apply -f examples/weight/
kubectl -n demo rollout status deploy/dubbo3-provider --timeout=60s
kubectl -n demo rollout status deploy/dubbo3-consumer --timeout=60s
kubectl -n demo get deploy,virtualservice,destinationrule,gateway

say "kubectl edit deploy/dubbo3-provider: version v1 → v2 (and the v0.3 image)"
kubectl -n demo patch deploy dubbo3-provider --type=json -p '[
  {"op":"replace","path":"/spec/template/metadata/labels/version","value":"v2"},
  {"op":"replace","path":"/spec/template/spec/containers/0/image","value":"release-ci.daocloud.io/mspider/spring-dubbo3-provider:v0.3"}]'
echo "spec.paused after the edit: $(kubectl -n demo get deploy dubbo3-provider -o jsonpath='{.spec.paused}')"

say "the release, step by step (weights on route test-v1 of VirtualService provider; Ready pods per version)"
"$VANE_RUN_DIR/bin/watch" -n demo -timeout 3m dubbo3-provider

say "after the release"
kubectl -n demo get deploy -o wide
kubectl -n demo get virtualservice provider -o jsonpath='{range .spec.http[0].route[*]}{.destination.subset}={.weight} {end}{"\n"}'
kubectl -n demo get destinationrule dubbo-provider -o jsonpath='{range .spec.subsets[*]}{.name}={.labels} {end}{"\n"}'
say "events on deploy/dubbo3-provider"
kubectl -n demo get events --field-selector involvedObject.name=dubbo3-provider,involvedObject.kind=Deployment --sort-by=.metadata.creationTimestamp -o custom-columns=REASON:.reason,MESSAGE:.message | grep -v ScalingReplicaSet
