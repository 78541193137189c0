// Package manifests turns a cell branch into objects and guards them. It renders nothing: the
// root kustomization.yaml must be a plain list of the branch's own files, which are decoded with
// a bounded decoder (nodes, aliases, depth, bytes), so the objects are exactly the bytes the
// commit signature covers. Then the cell's policy: objects only in the cell's namespaces, no
// cluster-scoped, RBAC or cellsync objects unless the member allows them, an optional
// group-qualified kind allow-list, and the Pod Security Standards on every pod template. A
// branch that breaks a rule is refused whole.
package manifests
