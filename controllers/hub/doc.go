// Package hub holds the hub's thin reconcilers: Cell, CellPlacement and ServerlessApp. Each one
// reads its object, runs the engine under hub/ (placement, render, cellbranch, gitstore) and
// computes its status in one place (status.go) before a single patch on exit.
package hub
