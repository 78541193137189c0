// Package cellbranch owns the layout of a cell branch: one folder per app
// (<namespace>/<app>/*.yaml), a root kustomization.yaml listing every rendered file so that
// plain `kustomize build`, Flux and Argo CD can use the root unchanged, and .cellsync/ metadata
// (renderer version, and per app its revision and source commit). It edits a tree through the
// Files interface and knows nothing of Git.
package cellbranch
