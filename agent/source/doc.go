// Package source is the agent's side of Git: it polls a cell branch with one ref listing,
// fetches (single branch, depth 1) into a disk-backed bare repository only when the branch moved,
// verifies commit signatures against trusted keys, and reads a commit's files without a work
// tree. It keeps working from disk while the Git server is away.
package source
