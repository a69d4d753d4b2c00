#!/usr/bin/env bash
# hack/mesh-demo.sh — the seed's weight scenario with real traffic: the
# provider on the mesh node, hack/mesh/traffic printing the live split while
# vane moves the weight 5% → 50% → 100% (pauses of 5 s). Needs a cluster with
# the mesh and vane running: `make up MESH=1`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
eval "$(bash "$ROOT/hack/cluster.sh" env)"
[[ -n ${VANE_ISTIOD_XDS:-} ]] || { echo "no mesh: run make up MESH=1 (or hack/cluster.sh up --mesh; hack/vane.sh start)" >&2; exit 1; }
NS=${NS:-mesh-demo}
PAUSE=${PAUSE:-5s}

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: dubbo3-provider, namespace: $NS}
spec:
  ports: [{name: grpc-20880, port: 20880, targetPort: 20880}]
  selector: {app: dubbo3-provider}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dubbo-provider, namespace: $NS}
spec:
  host: dubbo3-provider
  subsets:
  - {name: stable, labels: {app: dubbo3-provider}}
  - {name: canary, labels: {app: dubbo3-provider}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: provider, namespace: $NS}
spec:
  hosts: [dubbo3-provider]
  http:
  - name: test-v1
    route:
    - {destination: {host: dubbo3-provider, port: {number: 20880}, subset: stable}, weight: 100}
    - {destination: {host: dubbo3-provider, port: {number: 20880}, subset: canary}, weight: 0}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: dubbo3-provider
  namespace: $NS
  labels: {app: dubbo3-provider, vane.io/canary: enabled}
  annotations:
    vane.io/strategy: |
      canary:
        trafficRouting:
          istio:
            virtualService: {name: provider, routes: [test-v1]}
            destinationRule: {name: dubbo-provider, stableSubsetName: stable, canarySubsetName: canary}
        steps:
        - setWeight: 5
        - pause: {duration: $PAUSE}
        - setWeight: 50
        - pause: {duration: $PAUSE}
spec:
  replicas: 4
  selector: {matchLabels: {app: dubbo3-provider}}
  template:
    metadata:
      labels: {app: dubbo3-provider, version: v1}
    spec:
      nodeSelector: {vane.io/mesh: "true"}
      containers:
      - name: container-1
        image: release-ci.daocloud.io/mspider/spring-dubbo3-provider:v0.2
        ports: [{name: grpc, containerPort: 20880}]
YAML
kubectl -n "$NS" rollout status deploy/dubbo3-provider --timeout=60s >/dev/null
sleep 2

echo "== traffic -target dubbo3-provider.$NS:20880 -interval 1s   (one line per second)"
traffic -target "dubbo3-provider.$NS:20880" -interval 1s -d "${DURATION:-22s}" | tr '\r' '\n' | sed -u 's/\x1b\[K//; /^$/d' &
TRAFFIC=$!
sleep 3
echo "== $(date +%T) kubectl patch: version v1 → v2"
kubectl -n "$NS" patch deploy dubbo3-provider --type=json \
  -p='[{"op":"replace","path":"/spec/template/metadata/labels/version","value":"v2"}]' >/dev/null
wait "$TRAFFIC"
echo "== $(date +%T) $(kubectl -n "$NS" get deploy dubbo3-provider -o jsonpath='{.metadata.annotations.vane\.io/status}' | head -c 200)"
