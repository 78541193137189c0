package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHousekeepingPacksLooseRefs: with housekeeping on, a push that leaves more than 1,000 loose
// refs gets them packed in the background, and every ref still lists at its commit; a push of a
// few refs leaves them loose.
func TestHousekeepingPacksLooseRefs(t *testing.T) {
	g, err := StartGitServer("u", "p")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.SetHousekeeping(true)
	if _, err := g.CreateRepo("fleet"); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	if _, err := Git(work, "init", "-q", "-b", "main"); err != nil {
		t.Fatal(err)
	}
	if _, err := Git(work, "commit", "-q", "--allow-empty", "-m", "one"); err != nil {
		t.Fatal(err)
	}
	push := func(n int, prefix string) {
		t.Helper()
		args := []string{"push", "-q", "--atomic", g.AuthURL("fleet")}
		for i := range n {
			args = append(args, fmt.Sprintf("HEAD:refs/heads/%s%04d", prefix, i))
		}
		if _, err := Git(work, args...); err != nil {
			t.Fatal(err)
		}
	}
	push(10, "few/")
	time.Sleep(200 * time.Millisecond)
	if g.RefPacks() != 0 {
		t.Fatalf("10 loose refs were packed (%d runs); want them left loose", g.RefPacks())
	}
	push(1500, "cells/cell-")
	deadline := time.Now().Add(30 * time.Second)
	for g.RefPacks() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if g.RefPacks() == 0 {
		t.Fatal("1,510 loose refs were not packed")
	}
	if n := looseRefs(g.RepoDir("fleet"), 10_000); n > looseRefsLimit {
		t.Errorf("%d loose refs after housekeeping; want at most %d", n, looseRefsLimit)
	}
	if _, err := os.Stat(filepath.Join(g.RepoDir("fleet"), "packed-refs")); err != nil {
		t.Errorf("no packed-refs after housekeeping: %v", err)
	}
	head, err := Git(work, "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Git(work, "ls-remote", g.AuthURL("fleet"), "refs/heads/cells/*")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(out, "\n"); len(lines) != 1500 || !strings.HasPrefix(lines[1499], head) {
		t.Errorf("after packing, ls-remote lists %d cell refs (last %q); want 1500 at %s", len(lines), lines[len(lines)-1], head)
	}
}
