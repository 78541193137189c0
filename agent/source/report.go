package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/controllers/gitrefs"
)

// PushReport writes content as the only file of an orphan commit, signed when signer is set,
// and force-pushes it to branch of the repository at url: the report ref never grows history.
// The commit is built in an empty in-memory clone that is dropped after the push, so nothing
// accumulates between reports and nothing of the cell branch's mirror is read: url may be the
// cell branch's repository or a status repository of its own. It is a Reporter's first push.
func PushReport(ctx context.Context, url string, auth transport.AuthMethod, branch, file string, content []byte, now time.Time, signer *openpgp.Entity) (string, error) {
	return (&Reporter{URL: url, Branch: branch, File: file}).Push(ctx, auth, content, now, signer)
}

// Reporter pushes one cell's reports to one status ref, as PushReport does, and remembers the
// commit its last push left there. Over HTTP(S), a push after the first is then one request:
// git's receive-pack advertises every ref of the repository before a push (about 70 bytes a
// ref, in any protocol version), but smart HTTP is stateless, and a push whose command names
// the ref's current commit needs no advertisement. When that push fails for any reason (someone
// else moved the ref, the server refused or changed), the same call pushes again the usual way,
// advertisement first.
type Reporter struct {
	URL, Branch, File string
	// last is the commit the last push left on the ref (zero before the first, or after a
	// failure).
	last plumbing.Hash
}

// Push writes content as the report (see PushReport) and returns the commit.
func (r *Reporter) Push(ctx context.Context, auth transport.AuthMethod, content []byte, now time.Time, signer *openpgp.Entity) (string, error) {
	if err := gitauth.CheckURL(r.URL); err != nil {
		return "", err
	}
	repo, err := git.Init(memory.NewStorage(), nil)
	if err != nil {
		return "", err
	}
	commit, err := reportCommit(repo.Storer, r.File, content, now, signer)
	if err != nil {
		return "", err
	}
	if last := r.last; !last.IsZero() && gitrefs.Supported(r.URL) {
		r.last = plumbing.ZeroHash
		err := pushDirect(ctx, r.URL, auth, plumbing.NewBranchReferenceName(r.Branch), last, commit, repo.Storer)
		if err == nil {
			r.last = commit
			return commit.String(), nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
	remote, err := repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{r.URL}})
	if err != nil {
		return "", fmt.Errorf("invalid status URL %q: %w", gitauth.RedactURL(r.URL), err)
	}
	spec := config.RefSpec(fmt.Sprintf("+%s:refs/heads/%s", commit, r.Branch))
	err = remote.PushContext(ctx, &git.PushOptions{RemoteName: remoteName, RefSpecs: []config.RefSpec{spec}, Auth: auth, Force: true})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return "", gitauth.Classify(err, r.URL)
	}
	r.last = commit
	return commit.String(), nil
}

// pushDirect moves ref from old to commit with one receive-pack request, without its
// advertisement: the pack holds the report's three objects.
func pushDirect(ctx context.Context, url string, auth transport.AuthMethod, ref plumbing.ReferenceName, old, commit plumbing.Hash, s storer.EncodedObjectStorer) error {
	var pack bytes.Buffer
	hashes := make([]plumbing.Hash, 0, 3)
	iter, err := s.IterEncodedObjects(plumbing.AnyObject)
	if err != nil {
		return err
	}
	if err := iter.ForEach(func(o plumbing.EncodedObject) error { hashes = append(hashes, o.Hash()); return nil }); err != nil {
		return err
	}
	if _, err := packfile.NewEncoder(&pack, s, false).Encode(hashes, 0); err != nil {
		return err
	}
	req := packp.NewReferenceUpdateRequest()
	if err := req.Capabilities.Set(capability.ReportStatus); err != nil {
		return err
	}
	req.Commands = []*packp.Command{{Name: ref, Old: old, New: commit}}
	req.Packfile = io.NopCloser(&pack)
	_, err = gitrefs.ReceivePack(ctx, url, auth, req)
	return err
}

// reportCommit stores the report's blob, tree and orphan commit in s.
func reportCommit(s storer.EncodedObjectStorer, file string, content []byte, now time.Time, signer *openpgp.Entity) (plumbing.Hash, error) {
	blob := s.NewEncodedObject()
	blob.SetType(plumbing.BlobObject)
	w, err := blob.Writer()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := w.Write(content); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := w.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	blobHash, err := s.SetEncodedObject(blob)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	tree := &object.Tree{Entries: []object.TreeEntry{{Name: file, Mode: filemode.Regular, Hash: blobHash}}}
	to := s.NewEncodedObject()
	if err := tree.Encode(to); err != nil {
		return plumbing.ZeroHash, err
	}
	treeHash, err := s.SetEncodedObject(to)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	sig := object.Signature{Name: "cellsync agent", Email: "agent@cellsync.io", When: now}
	c := &object.Commit{Author: sig, Committer: sig, Message: "Status report", TreeHash: treeHash}
	if signer != nil {
		if err := gitauth.SignCommit(c, signer); err != nil {
			return plumbing.ZeroHash, err
		}
	}
	co := s.NewEncodedObject()
	if err := c.Encode(co); err != nil {
		return plumbing.ZeroHash, err
	}
	return s.SetEncodedObject(co)
}
