package source_test

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/cellsync/cellsync/agent/source"
	"github.com/cellsync/cellsync/test/testenv"
)

// BenchmarkListingLooseAndPackedRefs: what one agent's poll (a v2 listing of its branch) costs
// the Git server at 10,000 cells, with the repository's refs loose (every ref a file, as a push
// leaves them) and packed (as a Git host's housekeeping leaves them). git's ls-refs reads every
// loose ref in the prefix's folder, so the server's CPU per listing depends on it, while the
// bytes do not. Printed: the Git server's CPU per listing (its git processes) and bytes.
func BenchmarkListingLooseAndPackedRefs(b *testing.B) {
	for _, packed := range []bool{false, true} {
		name := "loose"
		if packed {
			name = "packed"
		}
		b.Run(name, func(b *testing.B) {
			srv := startServer(b)
			url, head := fleetRepo(b, srv, "gitops", "cells/c-04242")
			if packed {
				if _, err := testenv.Git(srv.RepoDir("gitops"), "pack-refs", "--all"); err != nil {
					b.Fatal(err)
				}
			}
			repo, err := source.Open(filepath.Join(b.TempDir(), "mirror"), url, "cells/c-04242")
			if err != nil {
				b.Fatal(err)
			}
			auth := &githttp.BasicAuth{Username: "u", Password: "p"}
			const listings = 20
			before, git0 := srv.Requests(), childCPU()
			b.ResetTimer()
			for range b.N {
				for range listings {
					if got, err := repo.Head(context.Background(), auth); err != nil || got != head {
						b.Fatalf("listing: %q, %v; want %s", got, err, head)
					}
				}
			}
			b.StopTimer()
			n := float64(b.N * listings)
			after := srv.Requests()
			b.ReportMetric(float64(childCPU()-git0)/float64(time.Millisecond)/n, "ms-git-cpu/listing")
			b.ReportMetric(float64(after.BytesIn+after.BytesOut-before.BytesIn-before.BytesOut)/n, "B/listing")
		})
	}
}

// childCPU is the CPU time of the process's finished children: the Git server's git processes.
func childCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
