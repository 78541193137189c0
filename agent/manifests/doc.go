// Package manifests turns a cell branch into objects and guards them: a kustomize build of the
// branch root from memory (no remote bases, nothing outside the tree), then the cell's policy:
// objects only in the cell's namespaces, no cluster-scoped objects unless allowed, and an
// optional kind allow-list. A branch that breaks a rule is refused whole.
package manifests
