package source_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/cellsync/cellsync/agent/source"
	"github.com/cellsync/cellsync/controllers/gitrefs"
	"github.com/cellsync/cellsync/test/testenv"
)

// startServer starts a test Git server with the user "u", password "p", stopped at the end.
func startServer(tb testing.TB) *testenv.GitServer {
	tb.Helper()
	srv, err := testenv.StartGitServer("u", "p")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Close)
	return srv
}

// fleetRepo creates the repository name on srv with one commit, pushed to branch, and 10,000
// cell branches and 10,000 status refs at that commit, written straight into the server's
// repository (loose, as pushes leave them); the cell branch named branch is the pushed one. It
// returns the repository's URL and the commit.
func fleetRepo(tb testing.TB, srv *testenv.GitServer, name, branch string) (url, head string) {
	tb.Helper()
	return repoWithCells(tb, srv, name, branch, 10_000)
}

// repoWithCells is fleetRepo with n cells.
func repoWithCells(tb testing.TB, srv *testenv.GitServer, name, branch string, n int) (url, head string) {
	tb.Helper()
	url, err := srv.CreateRepo(name)
	if err != nil {
		tb.Fatal(err)
	}
	work := tb.TempDir()
	for _, args := range [][]string{{"init", "-q"}, {"commit", "-q", "--allow-empty", "-m", "cell"}, {"push", "-q", srv.AuthURL(name), "HEAD:refs/heads/" + branch}} {
		if _, err := testenv.Git(work, args...); err != nil {
			tb.Fatal(err)
		}
	}
	if head, err = testenv.Git(work, "rev-parse", "HEAD"); err != nil {
		tb.Fatal(err)
	}
	var refs strings.Builder
	for i := range n {
		if cell := fmt.Sprintf("cells/c-%05d", i); cell != branch {
			fmt.Fprintf(&refs, "create refs/heads/%s %s\n", cell, head)
		}
		fmt.Fprintf(&refs, "create refs/heads/status/c-%05d %s\n", i, head)
	}
	cmd := exec.Command("git", "update-ref", "--stdin")
	cmd.Dir = srv.RepoDir(name)
	cmd.Stdin = strings.NewReader(refs.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("update-ref: %v: %s", err, out)
	}
	return url, head
}

// Once the server has answered with v2, an idle poll is one request (the ls-refs command,
// without the capability advertisement before it), and the same repository keeps working when
// the server stops speaking v2 (the failed request is followed by a discovery in the same poll)
// and when it speaks v2 again; a wrong password is still an error that says so.
func TestIdlePollIsOneRequestOnV2(t *testing.T) {
	srv := startServer(t)
	url, head := repoWithCells(t, srv, "gitops", "cells/c-00007", 10)
	repo, err := source.Open(filepath.Join(t.TempDir(), "mirror"), url, "cells/c-00007")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	auth := &githttp.BasicAuth{Username: "u", Password: "p"}
	poll := func(want gitrefs.Protocol) (requests, listings int) {
		t.Helper()
		before := srv.Requests()
		got, err := repo.Head(ctx, auth)
		if err != nil {
			t.Fatal(err)
		}
		if got != head || repo.Protocol() != want {
			t.Fatalf("head %q over %v, want %s over %v", got, repo.Protocol(), head, want)
		}
		after := srv.Requests()
		return after.HTTP - before.HTTP, after.RefListings - before.RefListings
	}
	if req, _ := poll(gitrefs.V2); req != 2 {
		t.Errorf("the first poll made %d requests; want 2 (capabilities, then ls-refs)", req)
	}
	for i := range 3 {
		if req, lst := poll(gitrefs.V2); req != 1 || lst != 1 {
			t.Errorf("idle poll %d made %d requests (%d listings); want 1 (ls-refs alone)", i+2, req, lst)
		}
	}
	srv.SetProtocolV0(true)
	if req, _ := poll(gitrefs.V0); req != 2 {
		t.Errorf("the poll that found the server without v2 made %d requests; want 2 (the refused ls-refs, the full advertisement)", req)
	}
	if req, _ := poll(gitrefs.V0); req != 1 {
		t.Errorf("a poll of a server without v2 made %d requests; want 1 (the full advertisement)", req)
	}
	srv.SetProtocolV0(false)
	poll(gitrefs.V2)
	if req, _ := poll(gitrefs.V2); req != 1 {
		t.Errorf("once v2 was back, an idle poll made %d requests; want 1", req)
	}
	if _, err := repo.Head(ctx, &githttp.BasicAuth{Username: "u", Password: "wrong"}); err == nil || !strings.Contains(err.Error(), "auth") {
		t.Errorf("a wrong password gave %v; want an authentication error", err)
	}
}

// An idle poll costs the same at any fleet size: with 10,000 cell branches and 10,000 status
// refs in the repository, listing one cell's branch moves under 1 KB (counted by the Git server)
// with protocol v2, and so does fetching its head after a move (v2's fetch command, under 4 KB);
// against a server without v2 both still work, from the full advertisement.
func TestListingCostsTheSameAtAnyFleetSize(t *testing.T) {
	srv := startServer(t)
	url, head := fleetRepo(t, srv, "gitops", "cells/c-04242")

	auth := &githttp.BasicAuth{Username: "u", Password: "p"}
	ctx := context.Background()
	// fetched is what the fetch after the last listing moved.
	var fetched int64
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
			if _, err := repo.Tree(got); err != nil {
				t.Fatalf("the fetched commit cannot be read: %v", err)
			}
			done := srv.Requests()
			fetched = done.BytesOut - after.BytesOut + done.BytesIn - after.BytesIn
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
	// The fetch after a move asks for the commit with v2's fetch command: no advertisement.
	if fetched > 4096 {
		t.Errorf("the fetch of one small commit moved %d bytes with 20,000 refs in the repository; want at most 4 KB", fetched)
	}
	t.Logf("v2 fetch of the head: %d bytes", fetched)
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
	t.Logf("v0 fallback: %d bytes; its fetch %d bytes", bytes, fetched)
	if fetched < 500_000 {
		t.Errorf("the v0 fallback's fetch moved only %d bytes: go-git's fetch starts with the full advertisement", fetched)
	}
}

// A heartbeat costs the same at any fleet size when reports go to a status repository of their
// own: a push pays for every ref of the repository it goes to (receive-pack advertises them all,
// in any protocol version), so with 10,000 cells in the fleet repository and the status refs in
// shards of 64 cells, a report push moves under 8 KB; the same push into the fleet repository
// moves every one of its refs.
func TestReportPushCostsTheSameAtAnyFleetSize(t *testing.T) {
	srv := startServer(t)
	fleet, err := srv.CreateRepo("gitops")
	if err != nil {
		t.Fatal(err)
	}
	shard, err := srv.CreateRepo("status-17")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	for _, args := range [][]string{{"init", "-q"}, {"commit", "-q", "--allow-empty", "-m", "seed"}} {
		if _, err := testenv.Git(work, args...); err != nil {
			t.Fatal(err)
		}
	}
	seed, err := testenv.Git(work, "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	fill := func(repo string, refs func(w *strings.Builder)) {
		t.Helper()
		if _, err := testenv.Git(work, "push", "-q", srv.AuthURL(repo), "HEAD:refs/heads/seed"); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		refs(&b)
		cmd := exec.Command("git", "update-ref", "--stdin")
		cmd.Dir = srv.RepoDir(repo)
		cmd.Stdin = strings.NewReader(b.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("update-ref: %v: %s", err, out)
		}
	}
	// The fleet: 10,000 cell branches and, as single-repository installs have them, 10,000
	// status refs. The shard: the status refs of its other 63 cells.
	fill("gitops", func(w *strings.Builder) {
		for i := range 10_000 {
			fmt.Fprintf(w, "create refs/heads/cells/c-%05d %s\ncreate refs/heads/status/c-%05d %s\n", i, seed, i, seed)
		}
	})
	fill("status-17", func(w *strings.Builder) {
		for i := range 63 {
			fmt.Fprintf(w, "create refs/heads/status/c-%05d %s\n", 17+157*i, seed)
		}
	})
	auth := &githttp.BasicAuth{Username: "u", Password: "p"}
	report := []byte("apiVersion: agent.cellsync.io/v1alpha1\nkind: StatusReport\ncell: c-09908\n")
	push := func(url string, at int) int64 {
		t.Helper()
		before := srv.Requests()
		if _, err := source.PushReport(context.Background(), url, auth, "status/c-09908", "status.yaml", report, time.Unix(int64(1_800_000_000+at), 0), nil); err != nil {
			t.Fatal(err)
		}
		after := srv.Requests()
		return after.BytesOut - before.BytesOut + after.BytesIn - before.BytesIn
	}
	for i := range 3 {
		if bytes := push(shard, i); bytes > 8*1024 {
			t.Errorf("heartbeat %d into the status shard moved %d bytes; want at most 8 KB", i+1, bytes)
		} else {
			t.Logf("heartbeat %d into a status shard of 64 cells: %d bytes", i+1, bytes)
		}
	}
	if got, err := testenv.Git(srv.RepoDir("status-17"), "rev-list", "--count", "status/c-09908"); err != nil || got != "1" {
		t.Fatalf("the report ref must hold one orphan commit, got %q (%v)", got, err)
	}
	bytes := push(fleet, 9)
	if bytes < 500_000 {
		t.Errorf("a push into the fleet repository moved only %d bytes: is every ref really advertised?", bytes)
	}
	t.Logf("heartbeat into the fleet repository (20,000 refs): %d bytes", bytes)
}

// After its first push, a Reporter's heartbeat over HTTP is one request without receive-pack's
// advertisement of every ref: into the fleet repository with 20,000 refs it moves a few KB where
// the first push moved the whole advertisement. When someone else moves the ref, the one-request
// push is refused (its command names the old commit) and the same heartbeat pushes again the
// usual way; the ref always ends on the report just pushed, an orphan commit the hub can read.
func TestHeartbeatIsOneRequestAfterTheFirst(t *testing.T) {
	srv := startServer(t)
	url, _ := fleetRepo(t, srv, "gitops", "cells/c-00042")
	ctx := context.Background()
	auth := &githttp.BasicAuth{Username: "u", Password: "p"}
	r := &source.Reporter{URL: url, Branch: "status/c-00042", File: "status.yaml"}
	push := func(at int) (commit string, requests int, bytes int64) {
		t.Helper()
		before := srv.Requests()
		body := []byte(fmt.Sprintf("apiVersion: agent.cellsync.io/v1alpha1\nkind: StatusReport\ncell: c-00042\nheartbeat: %d\n", at))
		commit, err := r.Push(ctx, auth, body, time.Unix(int64(1_800_000_000+at), 0), nil)
		if err != nil {
			t.Fatal(err)
		}
		after := srv.Requests()
		if head, err := srv.RevParse("gitops", "status/c-00042"); err != nil || head != commit {
			t.Fatalf("status/c-00042 is at %q (%v), want the report just pushed, %s", head, err, commit)
		}
		if got, err := testenv.Git(srv.RepoDir("gitops"), "show", commit+":status.yaml"); err != nil || !strings.Contains(got, fmt.Sprintf("heartbeat: %d", at)) {
			t.Fatalf("the report's file reads %q (%v)", got, err)
		}
		return commit, after.HTTP - before.HTTP, after.BytesIn + after.BytesOut - before.BytesIn - before.BytesOut
	}
	_, req, first := push(1)
	if req != 2 || first < 500_000 {
		t.Errorf("the first push made %d requests and moved %d bytes; want 2 (the advertisement of 20,000 refs, then the push)", req, first)
	}
	for i := 2; i <= 4; i++ {
		if _, req, bytes := push(i); req != 1 || bytes > 4096 {
			t.Errorf("heartbeat %d made %d requests and moved %d bytes; want 1 request, at most 4 KB", i, req, bytes)
		} else {
			t.Logf("heartbeat %d: one request, %d bytes (the first push: %d)", i, bytes, first)
		}
	}
	// Someone else moves the ref.
	seed, err := srv.RevParse("gitops", "cells/c-00042")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.Git(srv.RepoDir("gitops"), "update-ref", "refs/heads/status/c-00042", seed); err != nil {
		t.Fatal(err)
	}
	if _, req, _ := push(5); req != 3 {
		t.Errorf("the heartbeat after the ref moved made %d requests; want 3 (the refused push, then the advertisement and the push)", req)
	}
	if _, req, _ := push(6); req != 1 {
		t.Errorf("the heartbeat after that made %d requests; want 1", req)
	}
	if got, err := testenv.Git(srv.RepoDir("gitops"), "rev-list", "--count", "status/c-00042"); err != nil || got != "1" {
		t.Errorf("the report ref must hold one orphan commit, got %q (%v)", got, err)
	}
	// A wrong password: an authentication error, after trying both ways.
	if _, err := r.Push(ctx, &githttp.BasicAuth{Username: "u", Password: "wrong"}, []byte("x"), time.Unix(1_800_000_100, 0), nil); err == nil || !strings.Contains(err.Error(), "auth") {
		t.Errorf("a wrong password gave %v; want an authentication error", err)
	}
}
