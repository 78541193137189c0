package source_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/cellsync/cellsync/agent/source"
	"github.com/cellsync/cellsync/controllers/gitrefs"
	"github.com/cellsync/cellsync/test/testenv"
)

// An idle poll costs the same at any fleet size: with 10,000 cell branches and 10,000 status
// refs in the repository, listing one cell's branch moves under 1 KB (counted by the Git server)
// with protocol v2, and against a server without v2 it still finds the head from the full
// advertisement.
func TestListingCostsTheSameAtAnyFleetSize(t *testing.T) {
	srv, err := testenv.StartGitServer("u", "p")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	url, err := srv.CreateRepo("gitops")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	for _, args := range [][]string{{"init", "-q"}, {"commit", "-q", "--allow-empty", "-m", "cell"}, {"push", "-q", srv.AuthURL("gitops"), "HEAD:refs/heads/cells/c-04242"}} {
		if _, err := testenv.Git(work, args...); err != nil {
			t.Fatal(err)
		}
	}
	head, err := testenv.Git(work, "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	// The rest of the fleet, written straight into the server's repository.
	var refs strings.Builder
	for i := range 10_000 {
		if i != 4242 {
			fmt.Fprintf(&refs, "create refs/heads/cells/c-%05d %s\n", i, head)
		}
		fmt.Fprintf(&refs, "create refs/heads/status/c-%05d %s\n", i, head)
	}
	cmd := exec.Command("git", "update-ref", "--stdin")
	cmd.Dir = srv.RepoDir("gitops")
	cmd.Stdin = strings.NewReader(refs.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("update-ref: %v: %s", err, out)
	}

	auth := &githttp.BasicAuth{Username: "u", Password: "p"}
	ctx := context.Background()
	list := func(branch string) (string, gitrefs.Protocol, int64) {
		t.Helper()
		repo, err := source.Open(filepath.Join(t.TempDir(), "mirror"), url, branch)
		if err != nil {
			t.Fatal(err)
		}
		before := srv.Requests()
		got, err := repo.Head(ctx, auth)
		if err != nil {
			t.Fatal(err)
		}
		after := srv.Requests()
		if got != "" {
			if err := repo.Fetch(ctx, auth, got); err != nil {
				t.Fatalf("fetch after the listing: %v", err)
			}
		}
		return got, repo.Protocol(), after.BytesOut - before.BytesOut + after.BytesIn - before.BytesIn
	}

	got, proto, bytes := list("cells/c-04242")
	if got != head || proto != gitrefs.V2 {
		t.Fatalf("head %q over %v, want %s over v2", got, proto, head)
	}
	if bytes > 1024 {
		t.Errorf("an idle poll moved %d bytes with 20,000 refs in the repository; want at most 1 KB", bytes)
	}
	t.Logf("v2 listing: %d bytes", bytes)
	// A prefix of another cell's name is not that cell's branch; a missing branch is "".
	if got, _, _ := list("cells/c-0424"); got != "" {
		t.Errorf("cells/c-0424 has head %q; it does not exist", got)
	}

	srv.SetProtocolV0(true)
	got, proto, bytes = list("cells/c-04242")
	if got != head || proto != gitrefs.V0 {
		t.Fatalf("head %q over %v against a v0 server, want %s over v0", got, proto, head)
	}
	if bytes < 500_000 {
		t.Errorf("the v0 fallback moved only %d bytes: is it really the full advertisement?", bytes)
	}
	t.Logf("v0 fallback: %d bytes", bytes)
}
