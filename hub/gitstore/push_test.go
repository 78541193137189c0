package gitstore_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/test/testenv"
)

// A push streams its pack: the write of 16 MiB of files (random, so the pack is as large)
// allocates the files' copy in the clone and little else, where a pack built whole and then
// copied into the HTTP request allocated it three times over. The server gets every file intact.
// A push the server drops ends its pack writer (no goroutine left behind).
func TestPushStreamsThePack(t *testing.T) {
	srv, url := newServer(t)
	store := newStore(t, url, pass, nil)
	ctx := context.Background()
	const branches, size = 8, 2 << 20
	content := map[string][]byte{}
	var names []string
	for i := range branches {
		b := make([]byte, size)
		_, _ = rand.Read(b)
		name := fmt.Sprintf("cells/c%d", i)
		content[name] = b
		names = append(names, name)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := store.Apply(ctx, gitstore.Update{Message: "large", Branches: names, Edit: func(branch string, tr *gitstore.Tree) error {
		tr.Write("blob.bin", content[branch])
		return nil
	}})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Commits) != branches {
		t.Fatalf("%d commits, want %d", len(res.Commits), branches)
	}
	files := int64(branches * size)
	allocated := int64(after.TotalAlloc - before.TotalAlloc)
	t.Logf("a write of %d MiB allocated %d MiB (the test Git server in this process included)", files>>20, allocated>>20)
	if allocated > 2*files {
		t.Errorf("a write of %d MiB allocated %d MiB: the pack was held whole", files>>20, allocated>>20)
	}
	for _, name := range names {
		got, err := testenv.Git(srv.RepoDir("gitops"), "cat-file", "-s", name+":blob.bin")
		if err != nil || got != fmt.Sprint(size) {
			t.Errorf("%s:blob.bin on the server: %q %v", name, got, err)
		}
	}
	if out, err := testenv.Git(srv.RepoDir("gitops"), "fsck", "--no-progress"); err != nil {
		t.Errorf("git fsck: %v\n%s", err, out)
	}

	// The server drops the connection once it has read the push: an error, no ref moved, and no
	// pack writer left behind.
	srv.FailNextPush("refs/heads/cells/c0", testenv.DieMidPush, 0)
	_, err = store.Apply(ctx, gitstore.Update{Message: "dropped", Branches: []string{"cells/c0"}, Edit: func(_ string, tr *gitstore.Tree) error {
		tr.Write("blob.bin", []byte("small"))
		return nil
	}})
	if err == nil {
		t.Fatal("a push the server dropped went through")
	}
	if got, _ := testenv.Git(srv.RepoDir("gitops"), "cat-file", "-s", "cells/c0:blob.bin"); got != fmt.Sprint(size) {
		t.Errorf("cells/c0 changed after a dropped push: blob.bin is %s bytes", got)
	}
	waitNoGoroutine(t, "gitstore.writePack")
}

// waitNoGoroutine fails when a goroutine running fn is still there after a few seconds.
func waitNoGoroutine(t *testing.T, fn string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
		if !strings.Contains(b.String(), fn) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a goroutine in %s is left behind:\n%s", fn, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
