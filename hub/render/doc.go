// Package render turns a ServerlessApp into the manifests one cell runs: a Knative Service (or a
// Deployment, Service and HorizontalPodAutoscaler on kubernetes cells), DomainMappings and
// PingSources, with the cell's overrides applied by kustomize. It is pure: no cluster, no Git.
// The same inputs always give the same bytes.
package render
