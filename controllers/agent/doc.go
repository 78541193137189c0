// Package agent holds the agent's reconciler: CellSync, which pulls one cell branch, guards and
// applies it, and reports back to the hub through Git. The work lives in agent/source,
// agent/manifests and agent/apply; this package sequences it and owns the status.
package agent
