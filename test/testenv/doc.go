// Package testenv starts the real parts every cellsync test runs against: a kube-apiserver and
// etcd (envtest, built from Go modules by `make envtest`), optionally with the Knative Serving
// CRDs from the knative.dev/serving module and kwok Stages that report Knative status, and a
// Git smart-HTTP server (git http-backend behind net/http/cgi) with basic auth.
package testenv
