// Package placement resolves a CellPlacement to cells: by label selector, by explicit names, and
// with topology Cluster to every cell of the clusters picked. It enforces the tenant rule (a
// placement may only resolve cells of its namespace's tenant) and says which overrides apply to
// which cell. It is pure: callers pass the cells.
package placement
