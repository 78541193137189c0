package source_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/cellsync/cellsync/agent/source"
	"github.com/cellsync/cellsync/test/testenv"
)

// An idle poll is one ref listing and no fetch; a moved branch is fetched once. Counted by the
// Git server.
func TestPollFetchesOnlyWhenTheBranchMoved(t *testing.T) {
	srv, err := testenv.StartGitServer("agent", "pw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	url, err := srv.CreateRepo("gitops")
	if err != nil {
		t.Fatal(err)
	}
	clone := t.TempDir()
	commit := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(clone, "kustomization.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"add", "."}, {"commit", "-qm", content}, {"push", "-q", "origin", "HEAD:refs/heads/cells/a"}} {
			if _, err := testenv.Git(clone, args...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := testenv.Git(clone, "init", "-q"); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.Git(clone, "remote", "add", "origin", srv.AuthURL("gitops")); err != nil {
		t.Fatal(err)
	}
	commit("resources: []\n")

	repo, err := source.Open(filepath.Join(t.TempDir(), "mirror.git"), url, "cells/a")
	if err != nil {
		t.Fatal(err)
	}
	auth := &githttp.BasicAuth{Username: "agent", Password: "pw"}
	ctx := context.Background()
	poll := func() {
		t.Helper()
		head, err := repo.Head(ctx, auth)
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.Fetch(ctx, auth, head); err != nil {
			t.Fatal(err)
		}
	}
	poll() // first sight: list and fetch
	before := srv.Requests()
	poll()
	poll()
	idle := srv.Requests()
	if got := idle.RefListings - before.RefListings; got != 2 {
		t.Fatalf("two idle polls made %d ref listings, want 2", got)
	}
	if got := idle.Fetches - before.Fetches; got != 0 {
		t.Fatalf("idle polls fetched %d times, want none", got)
	}
	commit("resources: []\n# moved\n")
	poll()
	if got := srv.Requests().Fetches - idle.Fetches; got != 1 {
		t.Fatalf("a moved branch was fetched %d times, want once", got)
	}
}
