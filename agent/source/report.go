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

	"github.com/cellsync/cellsync/controllers/gitauth"
)

// PushReport writes content as the only file of an orphan commit, signed when signer is set,
// and force-pushes it to branch: the report ref never grows history.
func (r *Repo) PushReport(ctx context.Context, auth transport.AuthMethod, branch, file string, content []byte, now time.Time, signer *openpgp.Entity) (string, error) {
	s := r.repo.Storer
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
	err = r.remote.PushContext(ctx, &git.PushOptions{RemoteName: remoteName, RefSpecs: []config.RefSpec{spec}, Auth: auth, Force: true})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return "", gitauth.Classify(err, r.url)
	}
	return commit.String(), nil
}
