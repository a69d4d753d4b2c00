// Package argocd tests vane's Argo CD customizations for apps/Deployment
// (manifests/argocd: a Lua health check and resource actions) by running
// them in gopher-lua, as Argo CD runs them, on status samples.
package argocd
