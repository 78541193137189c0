package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/cellsync/cellsync/agent/manifests"
	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/controllers/gitpack"
	"github.com/cellsync/cellsync/controllers/gitrefs"
)

const remoteName = "origin"

// Fetch limits: a pack is cut off as it streams once it passes MaxPackBytes, and refused whole
// when any object in it would inflate past MaxObjectBytes, judged from the object headers.
const (
	MaxPackBytes   = 64 << 20
	MaxObjectBytes = manifests.MaxFileBytes
	maxPackObjects = 4*manifests.MaxFiles + 1000
)

var fetchLimits = gitpack.Limits{PackBytes: MaxPackBytes, ObjectBytes: MaxObjectBytes, Objects: maxPackObjects, Who: "the agent", What: "the branch"}

// LimitError is a fetch the agent refused for its size; nothing of it was stored.
type LimitError = gitpack.LimitError

// guardedStorage is the mirror's storage with the fetch guard in front of its pack writer: a
// pack reaches the mirror only after it was read once, object header by object header, with
// bounded memory, and found within the limits.
type guardedStorage struct {
	*filesystem.Storage
	tmpDir string
}

var _ storer.PackfileWriter = (*guardedStorage)(nil)

func (g *guardedStorage) PackfileWriter() (io.WriteCloser, error) {
	return gitpack.Writer(g.Storage, fetchLimits, g.tmpDir)
}

// maxTreeDepth bounds how deep a branch's folders may nest.
const maxTreeDepth = 32

// Repo is a cell branch mirrored on disk.
type Repo struct {
	url    string
	branch string
	repo   *git.Repository
	remote *git.Remote
	// protocol is what the last listing used.
	protocol gitrefs.Protocol
	lister   gitrefs.Lister
}

// Open opens (or creates) the bare mirror at dir for url's branch. A URL with a password in it
// is refused: credentials come from the Secret and never reach the disk.
func Open(dir, url, branch string) (*Repo, error) {
	if err := gitauth.CheckURL(url); err != nil {
		return nil, &gitauth.ConfigError{Err: err}
	}
	tmp := filepath.Join(dir, "incoming")
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return nil, fmt.Errorf("failed to create the local mirror %s: %w", dir, err)
	}
	fs := filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRU(4*cache.MiByte), filesystem.Options{ExclusiveAccess: true})
	st := &guardedStorage{Storage: fs, tmpDir: tmp}
	repo, err := git.Open(st, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.Init(st, nil)
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

// Head lists the branch on the remote and returns its head ("" when the branch does not exist
// yet). Over HTTP(S) it asks for that one ref with Git protocol v2's ls-refs, so the listing
// costs the same whatever the number of cells; a server without v2, and SSH, get the full
// advertisement. Protocol says which the last listing used. Once the server has answered with
// v2, a listing is the ls-refs request alone; when that fails, Head discovers the protocol again
// (so a server that stops speaking v2 gets the full advertisement from the same poll).
func (r *Repo) Head(ctx context.Context, auth transport.AuthMethod) (string, error) {
	want := plumbing.NewBranchReferenceName(r.branch)
	if gitrefs.Supported(r.url) {
		refs, proto, err := r.lister.List(ctx, r.url, auth, want.String())
		if err != nil {
			if errors.Is(err, transport.ErrEmptyRemoteRepository) {
				return "", nil
			}
			return "", gitauth.Classify(err, r.url)
		}
		r.protocol = proto
		return refs[want.String()], nil
	}
	r.protocol = gitrefs.V0
	refs, err := r.remote.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err != nil {
		if errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return "", nil
		}
		return "", gitauth.Classify(err, r.url)
	}
	for _, ref := range refs {
		if ref.Name() == want {
			return ref.Hash().String(), nil
		}
	}
	return "", nil
}

// Protocol is the protocol the last Head listing used.
func (r *Repo) Protocol() gitrefs.Protocol { return r.protocol }

// Has reports whether the commit is already on disk.
func (r *Repo) Has(commit string) bool {
	_, err := r.repo.CommitObject(plumbing.NewHash(commit))
	return err == nil
}

// Fetch brings the branch head to disk (single branch, depth 1) unless it is there already.
// A pack past the limits is refused with a *LimitError and nothing of it is stored.
func (r *Repo) Fetch(ctx context.Context, auth transport.AuthMethod, commit string) error {
	if r.Has(commit) {
		return nil
	}
	var err error
	if r.protocol == gitrefs.V2 {
		err = r.fetchV2(ctx, auth, commit)
	} else {
		spec := config.RefSpec(fmt.Sprintf("+refs/heads/%s:refs/remotes/%s/%s", r.branch, remoteName, r.branch))
		err = r.remote.FetchContext(ctx, &git.FetchOptions{RemoteName: remoteName, RefSpecs: []config.RefSpec{spec}, Auth: auth, Depth: 1, Tags: git.NoTags})
	}
	var limit *LimitError
	if errors.As(err, &limit) {
		return limit
	}
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return gitauth.Classify(err, r.url)
	}
	if !r.Has(commit) {
		return fmt.Errorf("fetched %s but commit %s is not there (the branch moved again); retrying", r.branch, short(commit))
	}
	return nil
}

// fetchV2 fetches the commit (depth 1) with Git protocol v2's fetch command, used when the
// server answered the listing with v2: no ref advertisement crosses the wire, so a fetch after a
// move costs the same whatever the number of cells. The pack goes through the same guard.
func (r *Repo) fetchV2(ctx context.Context, auth transport.AuthMethod, commit string) error {
	w, err := r.repo.Storer.(storer.PackfileWriter).PackfileWriter()
	if err != nil {
		return err
	}
	shallow, err := gitrefs.Fetch(ctx, r.url, auth, commit, w)
	if cerr := w.Close(); err == nil {
		err = cerr // the guard's verdict on the whole pack
	}
	if err != nil {
		return err
	}
	if len(shallow) > 0 {
		known, err := r.repo.Storer.Shallow()
		if err != nil {
			return err
		}
		for _, h := range shallow {
			if !slices.Contains(known, h) {
				known = append(known, h)
			}
		}
		if err := r.repo.Storer.SetShallow(known); err != nil {
			return err
		}
	}
	ref := plumbing.NewRemoteReferenceName(remoteName, r.branch)
	return r.repo.Storer.SetReference(plumbing.NewHashReference(ref, plumbing.NewHash(commit)))
}

// Verify checks that the commit is signed by one of the armored public keys.
func (r *Repo) Verify(commit string, armoredKeys []string) error {
	c, err := r.repo.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return err
	}
	if _, err := gitauth.VerifyCommit(c, armoredKeys); err != nil {
		if errors.Is(err, gitauth.ErrUnsigned) {
			return &VerificationError{Message: fmt.Sprintf("commit %s is not signed; refusing to apply it", short(commit))}
		}
		return &VerificationError{Message: fmt.Sprintf("commit %s is not signed by any trusted key; refusing to apply it", short(commit))}
	}
	return nil
}

// Tree returns the commit's tree for manifests.Load: entries and sizes come from tree and object
// headers, and no file is read until Load asks for it.
func (r *Repo) Tree(commit string) (manifests.Tree, error) {
	c, err := r.repo.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return nil, fmt.Errorf("commit %s is not on disk: %w", short(commit), err)
	}
	t := &tree{repo: r.repo, entries: map[string]treeEntry{}, objects: map[string]plumbing.EncodedObject{}}
	if err := t.walk(c.TreeHash, "", 0); err != nil {
		return nil, err
	}
	return t, nil
}

type treeEntry struct {
	kind manifests.EntryKind
	hash plumbing.Hash
}

// object looks a file's blob up once; Entry and Read share it.
func (t *tree) object(p string) (plumbing.EncodedObject, error) {
	if o, ok := t.objects[p]; ok {
		return o, nil
	}
	o, err := t.repo.Storer.EncodedObject(plumbing.BlobObject, t.entries[p].hash)
	if err != nil {
		return nil, err
	}
	t.objects[p] = o
	return o, nil
}

type tree struct {
	repo    *git.Repository
	entries map[string]treeEntry
	objects map[string]plumbing.EncodedObject
}

func (t *tree) walk(h plumbing.Hash, dir string, depth int) error {
	if depth > maxTreeDepth {
		return &manifests.InvalidError{Reason: manifests.ReasonLimitExceeded, Message: fmt.Sprintf("folder %s nests deeper than %d levels", dir, maxTreeDepth)}
	}
	o, err := t.repo.Storer.EncodedObject(plumbing.TreeObject, h)
	if err != nil {
		return err
	}
	if o.Size() > MaxObjectBytes {
		return &manifests.InvalidError{Reason: manifests.ReasonLimitExceeded, Message: fmt.Sprintf("folder %q has a tree of %d bytes; at most %d", dir, o.Size(), MaxObjectBytes)}
	}
	tr, err := object.DecodeTree(t.repo.Storer, o)
	if err != nil {
		return err
	}
	for _, e := range tr.Entries {
		p := path.Join(dir, e.Name)
		if len(t.entries) >= manifests.MaxFiles {
			return &manifests.InvalidError{Reason: manifests.ReasonLimitExceeded, Message: fmt.Sprintf("the branch has more than %d files and folders", manifests.MaxFiles)}
		}
		switch e.Mode {
		case filemode.Dir:
			t.entries[p] = treeEntry{kind: manifests.Directory, hash: e.Hash}
			if err := t.walk(e.Hash, p, depth+1); err != nil {
				return err
			}
		case filemode.Symlink:
			t.entries[p] = treeEntry{kind: manifests.Symlink, hash: e.Hash}
		case filemode.Submodule:
			t.entries[p] = treeEntry{kind: manifests.Submodule, hash: e.Hash}
		default:
			t.entries[p] = treeEntry{kind: manifests.RegularFile, hash: e.Hash}
		}
	}
	return nil
}

func (t *tree) Entry(p string) (manifests.EntryKind, int64, bool) {
	e, ok := t.entries[p]
	if !ok {
		return 0, 0, false
	}
	if e.kind != manifests.RegularFile {
		return e.kind, 0, true
	}
	o, err := t.object(p)
	if err != nil {
		return e.kind, 0, true // Read reports the error
	}
	return e.kind, o.Size(), true
}

func (t *tree) Read(p string) ([]byte, error) {
	e, ok := t.entries[p]
	if !ok || e.kind != manifests.RegularFile {
		return nil, fmt.Errorf("%s is not a file of the branch", p)
	}
	o, err := t.object(p)
	if err != nil {
		return nil, err
	}
	if o.Size() > MaxObjectBytes {
		return nil, &manifests.InvalidError{Reason: manifests.ReasonLimitExceeded, Message: fmt.Sprintf("file %s is %d bytes; at most %d", p, o.Size(), MaxObjectBytes)}
	}
	rd, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer func() { _ = rd.Close() }()
	return io.ReadAll(io.LimitReader(rd, MaxObjectBytes))
}

// VerificationError is a commit that must not be applied.
type VerificationError struct{ Message string }

func (e *VerificationError) Error() string { return e.Message }

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
