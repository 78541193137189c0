// Package version is what every cellsync binary says of itself with --version: the release set
// by the build (-ldflags -X), the Git commit it was built from, and the Go version.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at build time by the Makefile:
//
//	-X github.com/cellsync/cellsync/controllers/version.Version=v0.2.0
//	-X github.com/cellsync/cellsync/controllers/version.Commit=<sha>
var (
	// Version is the release; a plain `go build` leaves it "v0.0.0-dev".
	Version = "v0.0.0-dev"
	// Commit is the Git commit; when the build did not set it, the one Go recorded is used.
	Commit = ""
)

// Info is the version of a binary.
type Info struct {
	Version   string
	Commit    string
	GoVersion string
}

// Get returns this binary's version.
func Get() Info {
	i := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if i.Commit == "" {
		i.Commit = "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					i.Commit = s.Value
				}
			}
		}
	}
	return i
}

// String is the line --version prints, for example
// "agent v0.2.0 (commit 3974dd3…, go1.26.8)".
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, %s)", i.Version, i.Commit, i.GoVersion)
}
