package source

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/cellsync/cellsync/controllers/gitauth"
)

// PushReport writes content as the only file of an orphan commit, signed when signer is set,
// and force-pushes it to branch of the repository at url: the report ref never grows history.
// The commit is built in an empty in-memory clone that is dropped after the push, so nothing
// accumulates between reports and nothing of the cell branch's mirror is read: url may be the
// cell branch's repository or a status repository of its own.
func PushReport(ctx context.Context, url string, auth transport.AuthMethod, branch, file string, content []byte, now time.Time, signer *openpgp.Entity) (string, error) {
	if err := gitauth.CheckURL(url); err != nil {
		return "", err
	}
	repo, err := git.Init(memory.NewStorage(), nil)
	if err != nil {
		return "", err
	}
	remote, err := repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{url}})
	if err != nil {
		return "", fmt.Errorf("invalid status URL %q: %w", gitauth.RedactURL(url), err)
	}
	s := repo.Storer
	blob := s.NewEncodedObject()
	blob.SetType(plumbing.BlobObject)
	w, err := blob.Writer()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(content); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	blobHash, err := s.SetEncodedObject(blob)
	if err != nil {
		return "", err
	}
	tree := &object.Tree{Entries: []object.TreeEntry{{Name: file, Mode: filemode.Regular, Hash: blobHash}}}
	to := s.NewEncodedObject()
	if err := tree.Encode(to); err != nil {
		return "", err
	}
	treeHash, err := s.SetEncodedObject(to)
	if err != nil {
		return "", err
	}
	sig := object.Signature{Name: "cellsync agent", Email: "agent@cellsync.io", When: now}
	c := &object.Commit{Author: sig, Committer: sig, Message: "Status report", TreeHash: treeHash}
	if signer != nil {
		if err := gitauth.SignCommit(c, signer); err != nil {
			return "", err
		}
	}
	co := s.NewEncodedObject()
	if err := c.Encode(co); err != nil {
		return "", err
	}
	commit, err := s.SetEncodedObject(co)
	if err != nil {
		return "", err
	}
	spec := config.RefSpec(fmt.Sprintf("+%s:refs/heads/%s", commit, branch))
	err = remote.PushContext(ctx, &git.PushOptions{RemoteName: remoteName, RefSpecs: []config.RefSpec{spec}, Auth: auth, Force: true})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return "", gitauth.Classify(err, url)
	}
	return commit.String(), nil
}
