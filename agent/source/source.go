package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/cellsync/cellsync/hub/gitstore"
)

const remoteName = "origin"

// Limits on what a cell branch may hold, so a hostile branch cannot exhaust the agent.
const (
	MaxFiles     = 10_000
	MaxFileBytes = 4 << 20
	MaxTreeBytes = 64 << 20
)

// Repo is a cell branch mirrored on disk.
type Repo struct {
	url    string
	branch string
	repo   *git.Repository
	remote *git.Remote
}

// Open opens (or creates) the bare mirror at dir for url's branch.
func Open(dir, url, branch string) (*Repo, error) {
	repo, err := git.PlainOpen(dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
		repo, err = git.PlainInit(dir, true)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to open the local mirror %s: %w", dir, err)
	}
	remote, err := repo.Remote(remoteName)
	if errors.Is(err, git.ErrRemoteNotFound) {
		remote, err = repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{url}})
	}
	if err != nil {
		return nil, err
	}
	if urls := remote.Config().URLs; len(urls) != 1 || urls[0] != url {
		_ = repo.DeleteRemote(remoteName)
		if remote, err = repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{url}}); err != nil {
			return nil, err
		}
	}
	return &Repo{url: url, branch: branch, repo: repo, remote: remote}, nil
}

// Head lists the remote's refs once and returns the branch's head ("" when the branch does not
// exist yet).
func (r *Repo) Head(ctx context.Context, auth transport.AuthMethod) (string, error) {
	refs, err := r.remote.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err != nil {
		if errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return "", nil
		}
		return "", wrap(err, r.url)
	}
	want := plumbing.NewBranchReferenceName(r.branch)
	for _, ref := range refs {
		if ref.Name() == want {
			return ref.Hash().String(), nil
		}
	}
	return "", nil
}

// Has reports whether the commit is already on disk.
func (r *Repo) Has(commit string) bool {
	_, err := r.repo.CommitObject(plumbing.NewHash(commit))
	return err == nil
}

// Fetch brings the branch head to disk (single branch, depth 1) unless it is there already.
func (r *Repo) Fetch(ctx context.Context, auth transport.AuthMethod, commit string) error {
	if r.Has(commit) {
		return nil
	}
	spec := config.RefSpec(fmt.Sprintf("+refs/heads/%s:refs/remotes/%s/%s", r.branch, remoteName, r.branch))
	err := r.remote.FetchContext(ctx, &git.FetchOptions{RemoteName: remoteName, RefSpecs: []config.RefSpec{spec}, Auth: auth, Depth: 1, Tags: git.NoTags})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return wrap(err, r.url)
	}
	if !r.Has(commit) {
		return fmt.Errorf("fetched %s but commit %s is not there (the branch moved again); retrying", r.branch, short(commit))
	}
	return nil
}

// Verify checks that the commit is signed by one of the armored public keys.
func (r *Repo) Verify(commit string, armoredKeys []string) error {
	c, err := r.repo.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return err
	}
	if c.PGPSignature == "" {
		return &VerificationError{Message: fmt.Sprintf("commit %s is not signed; refusing to apply it", short(commit))}
	}
	for _, k := range armoredKeys {
		if _, err := c.Verify(k); err == nil {
			return nil
		}
	}
	return &VerificationError{Message: fmt.Sprintf("commit %s is not signed by any trusted key; refusing to apply it", short(commit))}
}

// Files reads every file of the commit's tree, within the size limits.
func (r *Repo) Files(commit string) (map[string][]byte, error) {
	c, err := r.repo.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return nil, fmt.Errorf("commit %s is not on disk: %w", short(commit), err)
	}
	tree, err := c.Tree()
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	total := 0
	err = tree.Files().ForEach(func(f *object.File) error {
		if len(out) >= MaxFiles {
			return fmt.Errorf("the branch has more than %d files", MaxFiles)
		}
		if f.Size > MaxFileBytes {
			return fmt.Errorf("file %s is larger than %d bytes", f.Name, MaxFileBytes)
		}
		if total += int(f.Size); total > MaxTreeBytes {
			return fmt.Errorf("the branch holds more than %d bytes", MaxTreeBytes)
		}
		rd, err := f.Reader()
		if err != nil {
			return err
		}
		defer func() { _ = rd.Close() }()
		b, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		out[f.Name] = b
		return nil
	})
	return out, err
}

// VerificationError is a commit that must not be applied.
type VerificationError struct{ Message string }

func (e *VerificationError) Error() string { return e.Message }

func wrap(err error, url string) error {
	msg := err.Error()
	if clean := gitstore.RedactURL(url); clean != url {
		msg = strings.ReplaceAll(msg, url, clean)
	}
	if errors.Is(err, transport.ErrAuthenticationRequired) || errors.Is(err, transport.ErrAuthorizationFailed) {
		return fmt.Errorf("git server refused the credentials (check the CellSync secretRef): %s", msg)
	}
	return fmt.Errorf("git: %s", msg)
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
