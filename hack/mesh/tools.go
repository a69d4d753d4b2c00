//go:build tools

// Package mesh pins the Istio control plane built by hack/mesh.sh:
// pilot-discovery (istiod) runs against the local API server and serves
// xDS to the proxyless gRPC clients of hack/traffic.
package mesh

import _ "istio.io/istio/pilot/cmd/pilot-discovery"
