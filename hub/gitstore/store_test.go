package gitstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/test/testenv"
)

const (
	user = "hub"
	pass = "s3cret-pass"
)

func newServer(t *testing.T) (*testenv.GitServer, string) {
	t.Helper()
	srv, err := testenv.StartGitServer(user, pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	url, err := srv.CreateRepo("gitops")
	if err != nil {
		t.Fatal(err)
	}
	return srv, url
}

func newStore(t *testing.T, url, password string, signer *openpgp.Entity) *gitstore.Store {
	t.Helper()
	s, err := gitstore.New(gitstore.Options{
		URL:       url,
		RetryBase: 20 * time.Millisecond,
		Credentials: func(context.Context) (transport.AuthMethod, *openpgp.Entity, error) {
			return &githttp.BasicAuth{Username: user, Password: password}, signer, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(files map[string]string) gitstore.EditFunc {
	return func(branch string, t *gitstore.Tree) error {
		for p, c := range files {
			t.Write(p, []byte(c+" on "+branch))
		}
		return nil
	}
}

func TestApplyPushesChangedBranchesTogetherAndSkipsUnchanged(t *testing.T) {
	g := NewWithT(t)
	srv, url := newServer(t)
	s := newStore(t, url, pass, nil)
	ctx := context.Background()

	res, err := s.Apply(ctx, gitstore.Update{Message: "first", Branches: []string{"cells/a", "cells/b"},
		Edit: write(map[string]string{"apps/hello/service.yaml": "v1", "kustomization.yaml": "k"})})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Commits).To(HaveLen(2))
	heads, err := srv.Heads("gitops")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(heads).To(HaveKeyWithValue("cells/a", res.Commits["cells/a"]))
	g.Expect(heads).To(HaveKeyWithValue("cells/b", res.Commits["cells/b"]))
	out, err := testenv.Git(srv.RepoDir("gitops"), "show", "cells/a:apps/hello/service.yaml")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(Equal("v1 on cells/a"))

	// The same content again: no commit, no push, heads unchanged.
	res, err = s.Apply(ctx, gitstore.Update{Message: "again", Prefixes: []string{"cells/"},
		Edit: write(map[string]string{"apps/hello/service.yaml": "v1", "kustomization.yaml": "k"})})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Commits).To(BeEmpty())
	g.Expect(res.Attempts).To(BeZero())
	after, _ := srv.Heads("gitops")
	g.Expect(after).To(Equal(heads))

	// A change to one branch commits only that one, on top of its head.
	res, err = s.Apply(ctx, gitstore.Update{Message: "b only", Prefixes: []string{"cells/"},
		Edit: func(branch string, t *gitstore.Tree) error {
			if branch == "cells/b" {
				t.Delete("apps/hello/service.yaml")
			}
			return nil
		}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Commits).To(HaveLen(1))
	g.Expect(res.Commits).To(HaveKey("cells/b"))
	parent, _ := testenv.Git(srv.RepoDir("gitops"), "rev-parse", "cells/b^")
	g.Expect(parent).To(Equal(heads["cells/b"]))
	after, _ = srv.Heads("gitops")
	g.Expect(after["cells/a"]).To(Equal(heads["cells/a"]))
}

func TestApplyFailedEditPushesNothing(t *testing.T) {
	g := NewWithT(t)
	srv, url := newServer(t)
	s := newStore(t, url, pass, nil)
	_, err := s.Apply(context.Background(), gitstore.Update{Message: "m", Branches: []string{"cells/a", "cells/b"},
		Edit: func(branch string, t *gitstore.Tree) error {
			if branch == "cells/b" {
				return errors.New("bad override")
			}
			t.Write("x.yaml", []byte("x"))
			return nil
		}})
	g.Expect(err).To(MatchError("bad override"))
	heads, _ := srv.Heads("gitops")
	g.Expect(heads).To(BeEmpty())
}

// raceable is a store whose cells/a holds one commit, and a clone of that branch through which
// another writer pushes.
func raceable(t *testing.T) (*testenv.GitServer, *gitstore.Store, string) {
	t.Helper()
	srv, url := newServer(t)
	s := newStore(t, url, pass, nil)
	if _, err := s.Apply(context.Background(), gitstore.Update{Message: "base", Branches: []string{"cells/a"}, Edit: write(map[string]string{"a.yaml": "1"})}); err != nil {
		t.Fatal(err)
	}
	clone := t.TempDir()
	if _, err := testenv.Git(clone, "clone", "-q", "--branch", "cells/a", srv.AuthURL("gitops"), "."); err != nil {
		t.Fatal(err)
	}
	return srv, s, clone
}

func TestApplyRetriesAfterLosingARace(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	// Someone else pushes to the branch between our read and our push.
	srv, s, clone := raceable(t)
	calls := 0
	res, err := s.Apply(ctx, gitstore.Update{Message: "ours", Branches: []string{"cells/a"},
		Edit: func(_ string, t *gitstore.Tree) error {
			calls++
			if calls == 1 {
				g.Expect(os.WriteFile(filepath.Join(clone, "theirs.yaml"), []byte("x"), 0o644)).To(Succeed())
				_, err := testenv.Git(clone, "add", ".")
				g.Expect(err).NotTo(HaveOccurred())
				_, err = testenv.Git(clone, "commit", "-qm", "theirs")
				g.Expect(err).NotTo(HaveOccurred())
				_, err = testenv.Git(clone, "push", "-q", "origin", "cells/a")
				g.Expect(err).NotTo(HaveOccurred())
			}
			t.Write("a.yaml", []byte("2"))
			return nil
		}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(calls).To(Equal(2), "the edit runs again on the fresh head")
	g.Expect(res.Attempts).To(Equal(2))
	theirs, _ := testenv.Git(clone, "rev-parse", "HEAD")
	parent, _ := testenv.Git(srv.RepoDir("gitops"), "rev-parse", "cells/a^")
	g.Expect(parent).To(Equal(theirs), "our commit sits on top of theirs: nothing is lost")
	out, _ := testenv.Git(srv.RepoDir("gitops"), "show", "cells/a:theirs.yaml")
	g.Expect(out).To(Equal("x"))
}

// Check runs at every attempt, before any edit: when another writer's push wins the race and the
// writer may no longer write (its app is being deleted, say), the retry writes nothing.
func TestApplyChecksAtEveryAttempt(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, s, clone := raceable(t)
	checks, edits := 0, 0
	removed := errors.New("the app is being deleted")
	_, err := s.Apply(ctx, gitstore.Update{Message: "ours", Branches: []string{"cells/a"},
		Check: func() error {
			if checks++; checks > 1 {
				return removed
			}
			return nil
		},
		Edit: func(_ string, t *gitstore.Tree) error {
			edits++
			// Another writer takes the app out between our read and our push.
			_, err := testenv.Git(clone, "rm", "-q", "a.yaml")
			g.Expect(err).NotTo(HaveOccurred())
			_, err = testenv.Git(clone, "commit", "-qm", "removed")
			g.Expect(err).NotTo(HaveOccurred())
			_, err = testenv.Git(clone, "push", "-q", "origin", "cells/a")
			g.Expect(err).NotTo(HaveOccurred())
			t.Write("a.yaml", []byte("2"))
			return nil
		}})
	g.Expect(err).To(MatchError(removed))
	g.Expect([2]int{checks, edits}).To(Equal([2]int{2, 1}), "checked again before the retry, which edits nothing")
	removedHead, _ := testenv.Git(clone, "rev-parse", "HEAD")
	head, _ := testenv.Git(srv.RepoDir("gitops"), "rev-parse", "cells/a")
	g.Expect(head).To(Equal(removedHead), "the removal stands")
}

func TestApplyErrorsSayWhatToDo(t *testing.T) {
	g := NewWithT(t)
	srv, url := newServer(t)
	ctx := context.Background()
	edit := write(map[string]string{"a.yaml": "1"})

	_, err := newStore(t, url, "wrong", nil).Apply(ctx, gitstore.Update{Branches: []string{"cells/a"}, Edit: edit})
	var auth *gitstore.AuthError
	g.Expect(errors.As(err, &auth)).To(BeTrue(), "wrong password: %v", err)
	g.Expect(err.Error()).NotTo(ContainSubstring("wrong"), "the password never appears in errors")

	srv.Stop()
	_, err = newStore(t, url, pass, nil).Apply(ctx, gitstore.Update{Branches: []string{"cells/a"}, Edit: edit})
	var down *gitstore.UnavailableError
	g.Expect(errors.As(err, &down)).To(BeTrue(), "server stopped: %v", err)

	g.Expect(srv.Start()).To(Succeed())
	_, err = newStore(t, url, pass, nil).Apply(ctx, gitstore.Update{Branches: []string{"cells/a"}, Edit: edit})
	g.Expect(err).NotTo(HaveOccurred(), "works again once the server is back")

	g.Expect(gitauth.RedactURL("https://u:p@git.example.com/x.git")).To(Equal("https://git.example.com/x.git"))
}

func TestSignedCommitsVerifyWithGit(t *testing.T) {
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatalf("gpg is needed to verify signatures with git verify-commit: %v", err)
	}
	g := NewWithT(t)
	srv, url := newServer(t)
	entity, err := openpgp.NewEntity("cellsync hub", "test", "hub@cellsync.io", nil)
	g.Expect(err).NotTo(HaveOccurred())
	var priv bytes.Buffer
	w, _ := armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	g.Expect(entity.SerializePrivate(w, nil)).To(Succeed())
	g.Expect(w.Close()).To(Succeed())
	signer, err := gitauth.SignerFromSecret(&corev1.Secret{Data: map[string][]byte{gitauth.SecretSigningKey: priv.Bytes()}})
	g.Expect(err).NotTo(HaveOccurred())

	s := newStore(t, url, pass, signer)
	res, err := s.Apply(context.Background(), gitstore.Update{Message: "signed", Branches: []string{"cells/a"}, Edit: write(map[string]string{"a.yaml": "1"})})
	g.Expect(err).NotTo(HaveOccurred())

	out, err := testenv.VerifyCommit(srv.RepoDir("gitops"), res.Commits["cells/a"], entity)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("Good signature"))

	// And a commit from an unsigned store does not verify.
	res, err = newStore(t, url, pass, nil).Apply(context.Background(), gitstore.Update{Message: "unsigned", Branches: []string{"cells/a"}, Edit: write(map[string]string{"a.yaml": "2"})})
	g.Expect(err).NotTo(HaveOccurred())
	out, err = testenv.VerifyCommit(srv.RepoDir("gitops"), res.Commits["cells/a"], entity)
	g.Expect(err).To(HaveOccurred(), "an unsigned commit must not verify: %s", out)
	g.Expect(out).NotTo(ContainSubstring("Good signature"))
}

// A long-running hub keeps its clone small: past MaxObjects it starts over from the branch tips,
// and keeps committing on top of the right heads.
func TestStoreStaysBoundedAndKeepsHistoryRight(t *testing.T) {
	g := NewWithT(t)
	srv, url := newServer(t)
	s, err := gitstore.New(gitstore.Options{
		URL:        url,
		MaxObjects: 20,
		Credentials: func(context.Context) (transport.AuthMethod, *openpgp.Entity, error) {
			return &githttp.BasicAuth{Username: user, Password: pass}, nil, nil
		},
	})
	g.Expect(err).NotTo(HaveOccurred())
	var last string
	for i := range 10 {
		res, err := s.Apply(context.Background(), gitstore.Update{Message: "m", Branches: []string{"cells/a", "cells/b"},
			Edit: write(map[string]string{"apps/x/service.yaml": fmt.Sprint("v", i)})})
		g.Expect(err).NotTo(HaveOccurred())
		if last != "" {
			parent, _ := testenv.Git(srv.RepoDir("gitops"), "rev-parse", "cells/a^")
			g.Expect(parent).To(Equal(last), "commit %d must sit on the previous head", i)
		}
		last = res.Commits["cells/a"]
		g.Expect(s.Objects()).To(BeNumerically("<=", 20+2*6), "the clone is dropped once past the bound")
	}
	count, _ := testenv.Git(srv.RepoDir("gitops"), "rev-list", "--count", "cells/a")
	g.Expect(count).To(Equal("10"))
}

// The hub's status intake fetches only the status refs that moved since it last looked.
func TestReadFilesFetchesOnlyMovedRefs(t *testing.T) {
	g := NewWithT(t)
	srv, url := newServer(t)
	writer := newStore(t, url, pass, nil)
	ctx := context.Background()
	report := func(branch, content string) {
		_, err := writer.Apply(ctx, gitstore.Update{Message: "report", Branches: []string{branch}, Edit: func(_ string, tr *gitstore.Tree) error {
			tr.Write("status.yaml", []byte(content))
			return nil
		}})
		g.Expect(err).NotTo(HaveOccurred())
	}
	report("status/a", "a1")
	report("status/b", "b1")
	report("cells/a", "not a status")

	reader := newStore(t, url, pass, nil)
	files, err := reader.ReadFiles(ctx, "status/", "status.yaml", nil)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(files).To(HaveLen(2))
	g.Expect(string(files["status/a"].Content)).To(Equal("a1"))

	before := srv.Requests()
	_, err = reader.ReadFiles(ctx, "status/", "status.yaml", nil)
	g.Expect(err).NotTo(HaveOccurred())
	unchanged := srv.Requests()
	g.Expect(unchanged.RefListings-before.RefListings).To(Equal(1), "one ref listing per read")
	g.Expect(unchanged.HTTP-before.HTTP).To(Equal(1), "the server spoke v2 before: the listing is the ls-refs request alone")
	g.Expect(unchanged.Fetches-before.Fetches).To(BeZero(), "nothing moved, nothing fetched")

	report("status/b", "b2")
	afterWrite := srv.Requests()
	files, err = reader.ReadFiles(ctx, "status/", "status.yaml", nil)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(files["status/b"].Content)).To(Equal("b2"))
	g.Expect(srv.Requests().Fetches-afterWrite.Fetches).To(Equal(1), "one fetch for the one moved ref")

	// What the caller already has is not read again: only the report it does not know comes back.
	files, err = reader.ReadFiles(ctx, "status/", "status.yaml", func(branch, commit string) bool {
		return branch == "status/a" && commit == files["status/a"].Commit
	})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(files).To(HaveLen(1))
	g.Expect(files).To(HaveKey("status/b"))
}

// Restore gives a branch an earlier commit's tree back as a new commit on top of its head, and
// works from a fresh clone that never saw that commit (fetched by hash).
func TestRestorePutsAnEarlierTreeBackAsANewCommit(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, url := newServer(t)
	s := newStore(t, url, pass, nil)
	first, err := s.Apply(ctx, gitstore.Update{Message: "v1", Branches: []string{"cells/a", "cells/b"}, Edit: write(map[string]string{"app.yaml": "v1"})})
	g.Expect(err).NotTo(HaveOccurred())
	second, err := s.Apply(ctx, gitstore.Update{Message: "v2", Branches: []string{"cells/a", "cells/b"}, Edit: write(map[string]string{"app.yaml": "v2", "new.yaml": "x"})})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(second.Before).To(Equal(first.Heads))

	fresh := newStore(t, url, pass, nil)
	res, err := fresh.Apply(ctx, gitstore.Update{Message: "restore", Branches: []string{"cells/a", "cells/b"},
		Restore: map[string]string{"cells/a": first.Commits["cells/a"], "cells/b": first.Commits["cells/b"]}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Attempts).To(Equal(1), "both branches in one push")
	for _, b := range []string{"cells/a", "cells/b"} {
		tree := func(rev string) string {
			out, err := testenv.Git(srv.RepoDir("gitops"), "rev-parse", rev+"^{tree}")
			g.Expect(err).NotTo(HaveOccurred())
			return strings.TrimSpace(out)
		}
		g.Expect(tree(res.Commits[b])).To(Equal(tree(first.Commits[b])))
		out, err := testenv.Git(srv.RepoDir("gitops"), "rev-parse", res.Commits[b]+"^")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(strings.TrimSpace(out)).To(Equal(second.Commits[b]), "a fast-forward on top of the head")
	}

	// Restoring a tree the branch already has writes nothing; a bad hash is an error.
	res, err = fresh.Apply(ctx, gitstore.Update{Branches: []string{"cells/a"}, Restore: map[string]string{"cells/a": first.Commits["cells/a"]}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Commits).To(BeEmpty())
	_, err = fresh.Apply(ctx, gitstore.Update{Branches: []string{"cells/a"}, Restore: map[string]string{"cells/a": "not-a-hash"}})
	g.Expect(err).To(MatchError(ContainSubstring("not a commit hash")))
}

// The store holds no lock across the network: while one write's push hangs at the Git server,
// a write to another branch, a read and the listing of every head go through, and a second
// write to the same branch lands first; the held write, refused as stale when it is let go,
// runs again on the new head, so nothing is lost. Under a lock held across the push, every one
// of them would wait for the release.
func TestOperationsRunBesideAPushInFlight(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	srv, url := newServer(t)
	s := newStore(t, url, pass, nil)
	_, err := s.Apply(ctx, gitstore.Update{Message: "base", Branches: []string{"cells/a", "cells/b"}, Edit: write(map[string]string{"x.yaml": "1"})})
	g.Expect(err).NotTo(HaveOccurred())

	held, release := srv.HoldNextPush("refs/heads/cells/a")
	t.Cleanup(release)
	edits := 0
	slow := make(chan error, 1)
	go func() {
		_, err := s.Apply(ctx, gitstore.Update{Message: "slow", Branches: []string{"cells/a"}, Edit: func(_ string, t *gitstore.Tree) error {
			edits++
			t.Write("slow.yaml", []byte("2"))
			return nil
		}})
		slow <- err
	}()
	within := func(what string, f func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			g.Expect(err).NotTo(HaveOccurred(), what)
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s waited for another write's push", what)
		}
	}
	select {
	case <-held:
	case <-time.After(2 * time.Minute):
		t.Fatal("the held push never reached the server")
	}
	within("a write to another branch", func() error {
		_, err := s.Apply(ctx, gitstore.Update{Message: "other", Branches: []string{"cells/b"}, Edit: write(map[string]string{"x.yaml": "2"})})
		return err
	})
	within("a read", func() error {
		_, files, err := s.ReadBranch(ctx, "cells/b", "")
		if err == nil && string(files["x.yaml"]) != "2 on cells/b" {
			err = fmt.Errorf("read %q", files["x.yaml"])
		}
		return err
	})
	within("the listing of every head", func() error { _, err := s.Heads(ctx); return err })
	within("a write to the same branch", func() error {
		_, err := s.Apply(ctx, gitstore.Update{Message: "fast", Branches: []string{"cells/a"}, Edit: write(map[string]string{"fast.yaml": "3"})})
		return err
	})
	release()
	g.Expect(<-slow).NotTo(HaveOccurred())
	g.Expect(edits).To(Equal(2), "the held write was refused as stale and ran again on the new head")
	dir := srv.RepoDir("gitops")
	for file, want := range map[string]string{"slow.yaml": "2", "fast.yaml": "3 on cells/a", "x.yaml": "1 on cells/a"} {
		out, err := testenv.Git(dir, "show", "cells/a:"+file)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(out).To(Equal(want), "both writes to cells/a are in its head")
	}
}
