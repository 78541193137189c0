package gitstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/controllers/gitpack"
	"github.com/cellsync/cellsync/controllers/gitrefs"
)

const (
	remoteName = "origin"
	// maxIndexedCommits bounds the flattened-tree cache; it is rebuilt from Git when dropped.
	maxIndexedCommits = 16384
)

// Credentials supplies what the store needs for one operation. It is called for every
// operation, so a fixed Secret takes effect without a restart.
type Credentials func(ctx context.Context) (transport.AuthMethod, *openpgp.Entity, error)

// Options configure a Store.
type Options struct {
	// URL of the GitOps repository.
	URL string
	// Credentials returns the auth method and the signing key (either may be nil).
	Credentials Credentials
	// AuthorName and AuthorEmail sign the commits' author and committer lines.
	AuthorName  string
	AuthorEmail string
	// Now is the clock for commit times.
	Now func() time.Time
	// MaxAttempts bounds the pushes of one update (the first try and its retries).
	MaxAttempts int
	// RetryBase is the first backoff after a rejected push; it doubles, with jitter.
	RetryBase time.Duration
	// MaxObjects bounds the in-memory clone: past it, the clone is dropped and the branch tips
	// fetched again (depth 1) on the next operation. Default 200,000.
	MaxObjects int
}

// Store writes branches of one repository. Its operations run side by side: the network
// (listings, fetches, pushes) is done off every lock, fetches land in a scratch clone whose
// objects the store's clone then adopts, and two writes to the same branch are ordered by the
// Git server (the later push is refused as stale and tried again on fresh heads).
type Store struct {
	opts Options
	// mu guards the fields below; it is held for map work only.
	mu sync.Mutex
	// objects is the in-memory clone the next operation works on.
	objects *objects
	// refused are the refs whose head was refused for its size: that head is not fetched again.
	refused map[string]refusal
	// lister lists over HTTP(S), one request while the server speaks v2; a scratch store
	// shares its parent's.
	lister *gitrefs.Lister
}

type flatTree struct {
	entries map[string]plumbing.Hash
	tree    plumbing.Hash
}

// New returns a store for the repository at opts.URL. Nothing is fetched until first use.
func New(opts Options) (*Store, error) {
	if opts.URL == "" {
		return nil, &ConfigError{Err: errors.New("git URL is empty")}
	}
	if err := gitauth.CheckURL(opts.URL); err != nil {
		return nil, &ConfigError{Err: err}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = 200 * time.Millisecond
	}
	if opts.MaxObjects <= 0 {
		opts.MaxObjects = 200_000
	}
	if opts.AuthorName == "" {
		opts.AuthorName = "cellsync hub"
	}
	if opts.AuthorEmail == "" {
		opts.AuthorEmail = "hub@cellsync.io"
	}
	if opts.Credentials == nil {
		opts.Credentials = func(context.Context) (transport.AuthMethod, *openpgp.Entity, error) { return nil, nil, nil }
	}
	if err := (&config.RemoteConfig{Name: remoteName, URLs: []string{opts.URL}}).Validate(); err != nil {
		return nil, &ConfigError{Err: fmt.Errorf("invalid git URL %q: %w", gitauth.RedactURL(opts.URL), err)}
	}
	return &Store{opts: opts, objects: newObjects(), refused: map[string]refusal{}, lister: &gitrefs.Lister{}}, nil
}

// FetchLimits bound every fetch into the hub's clone. The hub's own commits stay far below them;
// they stop a status ref that a hostile cell filled with a huge object, or with a flood of
// objects, from taking the hub's memory.
var FetchLimits = gitpack.Limits{PackBytes: 512 << 20, ObjectBytes: 4 << 20, Objects: 4_000_000, Who: "the hub", What: "the fetched refs"}

// RefFetchLimits bound the fetch of one ref on its own, after a fetch of several was refused.
var RefFetchLimits = gitpack.Limits{PackBytes: 16 << 20, ObjectBytes: 4 << 20, Objects: 100_000, Who: "the hub", What: "the ref"}

// guardedMemory is the in-memory clone's storage with the fetch guard in front of it: a pack
// is spooled to disk and checked, object header by object header, before it is parsed into
// memory.
type guardedMemory struct {
	*memory.Storage
	limits gitpack.Limits
}

func (g *guardedMemory) PackfileWriter() (io.WriteCloser, error) {
	return gitpack.Writer(g.Storage, g.limits, "")
}

// refusal is a ref whose head the hub refused to fetch, and why.
type refusal struct {
	head    plumbing.Hash
	message string
}

// clone returns the in-memory clone an operation works on. A clone past MaxObjects with
// nothing unpushed is dropped first: operations still working on it keep it until they end,
// and the next ones fetch the branch tips they need (depth 1) into a new one.
func (s *Store) clone() *objects {
	s.mu.Lock()
	defer s.mu.Unlock()
	if all, unpushed := s.objects.size(); all > s.opts.MaxObjects && unpushed == 0 {
		s.objects = newObjects()
	}
	return s.objects
}

// Objects is how many objects the in-memory clone holds.
func (s *Store) Objects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	all, _ := s.objects.size()
	return all
}

// scratch is an empty clone one fetch lands in, off every lock; the store adopts its objects.
type scratch struct {
	storage *memory.Storage
	guard   *guardedMemory
	remote  *git.Remote
	// v2, when set, fetches with Git protocol v2 by hash: it gives each spec's head.
	v2 func(spec config.RefSpec) plumbing.Hash
}

func (s *Store) scratch() (*scratch, error) {
	storage := memory.NewStorage()
	guard := &guardedMemory{Storage: storage, limits: FetchLimits}
	repo, err := git.Init(guard, nil)
	if err != nil {
		return nil, err
	}
	remote, err := repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{s.opts.URL}})
	if err != nil {
		return nil, &ConfigError{Err: fmt.Errorf("invalid git URL %q: %w", gitauth.RedactURL(s.opts.URL), err)}
	}
	return &scratch{storage: storage, guard: guard, remote: remote}, nil
}

// EditFunc edits one branch's tree. It returns an error to abandon the whole update: nothing is
// pushed then, for any branch.
type EditFunc func(branch string, files *Tree) error

// Update is one change to several branches.
type Update struct {
	// Message is the commit message.
	Message string
	// Branches are visited whether or not they exist yet.
	Branches []string
	// Prefixes visit every existing branch whose name starts with one of them.
	Prefixes []string
	// Restore maps branches to a commit whose tree they get back (as a new commit on top of
	// their head, so readers fast-forward) before Edit runs. A commit the clone lacks is fetched
	// by its hash, which the Git server must allow (uploadpack.allowReachableSHA1InWant, as
	// GitHub, GitLab and Gitea do).
	Restore map[string]string
	// Edit changes a branch's tree; nil leaves it as it is.
	Edit EditFunc
	// Check, when set, runs at the start of every attempt, once the heads are read and before
	// any branch is edited; an error abandons the update. It is where a writer makes sure it may
	// still write (its object is not being deleted, say): another writer's removal that lands
	// after the check makes this attempt's push stale, and the retry checks again.
	Check func() error
}

// Result says what an update did.
type Result struct {
	// Commits maps each branch that got a new commit to that commit.
	Commits map[string]string
	// Heads maps every visited branch to its head after the update ("" if it does not exist).
	Heads map[string]string
	// Before maps every visited branch to its head before the update ("" if it did not exist).
	Before map[string]string
	// Attempts is how many pushes it took (0 when nothing changed).
	Attempts int
}

// Apply runs an update: read the remote heads, edit every branch, commit the changed trees
// and push them together. Edits run again on a fresh read when a push loses a race.
func (s *Store) Apply(ctx context.Context, u Update) (*Result, error) {
	auth, signer, err := s.opts.Credentials(ctx)
	if err != nil {
		return nil, &ConfigError{Err: err}
	}
	backoff := s.opts.RetryBase
	for attempt := 1; ; attempt++ {
		res, pushErr, err := s.applyOnce(ctx, u, auth, signer, attempt)
		if err != nil {
			return nil, err
		}
		if pushErr == nil {
			return res, nil
		}
		if !isRejected(pushErr) || attempt >= s.opts.MaxAttempts {
			if isRejected(pushErr) {
				return nil, fmt.Errorf("push was rejected %d times; giving up for now: %w", attempt, pushErr)
			}
			return nil, classify(pushErr, s.opts.URL)
		}
		wait := backoff/2 + rand.N(backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		backoff *= 2
	}
}

// applyOnce does one read-edit-push round. It returns pushErr for a push that failed and err for
// anything else.
func (s *Store) applyOnce(ctx context.Context, u Update, auth transport.AuthMethod, signer *openpgp.Entity, attempt int) (*Result, error, error) {
	objs := s.clone()
	heads, refused, err := s.refreshPrefix(ctx, auth, objs, "", u.wants(), nil)
	if err == nil {
		err = refusedError(refused)
	}
	if err != nil {
		return nil, nil, err
	}
	if u.Check != nil {
		if err := u.Check(); err != nil {
			return nil, nil, err
		}
	}
	visit := visitList(u, heads)
	res := &Result{Commits: map[string]string{}, Heads: map[string]string{}, Before: map[string]string{}}
	var cmds []*packp.Command
	for _, branch := range visit {
		parent := heads[branch]
		tree, baseTree, err := objs.treeAt(parent)
		if err != nil {
			return nil, nil, err
		}
		if c, ok := u.Restore[branch]; ok {
			if tree, err = s.restoredTree(ctx, auth, objs, c); err != nil {
				return nil, nil, err
			}
		}
		if u.Edit != nil {
			if err := u.Edit(branch, tree); err != nil {
				return nil, nil, err
			}
		}
		if !parent.IsZero() {
			res.Heads[branch] = parent.String()
			res.Before[branch] = parent.String()
		}
		if !tree.changed || (parent.IsZero() && tree.Len() == 0) {
			continue
		}
		treeHash, err := tree.writeTree()
		if err != nil {
			return nil, nil, fmt.Errorf("failed to write tree for %q: %w", branch, err)
		}
		if treeHash == baseTree {
			continue
		}
		commit, err := commitObject(objs, treeHash, parent, u.Message, signer, s.opts)
		if err != nil {
			return nil, nil, err
		}
		objs.remember(commit, flatTree{entries: tree.entries, tree: treeHash})
		res.Commits[branch] = commit.String()
		res.Heads[branch] = commit.String()
		cmds = append(cmds, &packp.Command{Name: plumbing.NewBranchReferenceName(branch), Old: parent, New: commit})
	}
	if len(cmds) == 0 {
		return res, nil, nil
	}
	res.Attempts = attempt
	hashes, pack, err := objs.unpushedObjects()
	if err != nil {
		return nil, nil, err
	}
	if err := s.push(ctx, auth, cmds, pack); err != nil {
		return nil, err, nil
	}
	objs.pushed(hashes)
	return res, nil, nil
}

// restoredTree is an editable copy of a commit's tree, marked changed so that it is committed
// when it differs from the head's. A commit missing from the clone is fetched by hash.
func (s *Store) restoredTree(ctx context.Context, auth transport.AuthMethod, objs *objects, commit string) (*Tree, error) {
	h, err := commitHash(commit)
	if err != nil {
		return nil, fmt.Errorf("cannot restore: %w", err)
	}
	if err := s.fetchCommit(ctx, auth, objs, h); err != nil {
		return nil, err
	}
	tree, _, err := objs.treeAt(h)
	if err != nil {
		return nil, fmt.Errorf("failed to read commit %s: %w", commit, err)
	}
	tree.changed = true
	return tree, nil
}

// commitHash parses a full commit hash, refusing anything else (a branch name, a short hash).
func commitHash(commit string) (plumbing.Hash, error) {
	h := plumbing.NewHash(commit)
	if h.IsZero() || h.String() != commit {
		return plumbing.ZeroHash, fmt.Errorf("%q is not a commit hash", commit)
	}
	return h, nil
}

// fetchCommit fetches a commit the clone lacks by its hash.
func (s *Store) fetchCommit(ctx context.Context, auth transport.AuthMethod, objs *objects, h plumbing.Hash) error {
	if objs.has(h) {
		return nil
	}
	sc, err := s.scratch()
	if err != nil {
		return err
	}
	commit := h.String()
	spec := config.RefSpec(commit + ":" + plumbing.NewRemoteReferenceName(remoteName, "restore/"+commit).String())
	err = sc.remote.FetchContext(ctx, &git.FetchOptions{RemoteName: remoteName, RefSpecs: []config.RefSpec{spec}, Auth: auth, Tags: git.NoTags, Depth: 1})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		if errors.Is(err, git.ErrExactSHA1NotSupported) {
			return &ConfigError{Err: fmt.Errorf("commit %s is no longer in the hub's clone and the Git server does not serve commits by hash (set uploadpack.allowReachableSHA1InWant): %w", commit, err)}
		}
		return classify(err, s.opts.URL)
	}
	objs.adopt(&sc.storage.ObjectStorage)
	return nil
}

// ReadCommit returns every file under prefix ("" for all) at a commit of branch: a commit the
// clone lacks is looked for at the branch's head, then fetched by its hash.
func (s *Store) ReadCommit(ctx context.Context, branch, commit, prefix string) (map[string][]byte, error) {
	h, err := commitHash(commit)
	if err != nil {
		return nil, fmt.Errorf("cannot read branch %s: %w", branch, err)
	}
	objs := s.clone()
	if !objs.has(h) {
		auth, _, err := s.opts.Credentials(ctx)
		if err != nil {
			return nil, &ConfigError{Err: err}
		}
		heads, refused, err := s.refreshPrefix(ctx, auth, objs, branch, func(b string) bool { return b == branch }, nil)
		if err == nil {
			err = refusedError(refused)
		}
		if err != nil {
			return nil, err
		}
		if heads[branch] != h {
			if err := s.fetchCommit(ctx, auth, objs, h); err != nil {
				return nil, err
			}
		}
	}
	tree, _, err := objs.treeAt(h)
	if err != nil {
		return nil, fmt.Errorf("failed to read commit %s of branch %s: %w", commit, branch, err)
	}
	return tree.files(prefix)
}

// wants returns whether the update visits a branch; the branch set is built once, so a refresh
// over many refs costs one lookup per ref.
func (u Update) wants() func(branch string) bool {
	named := make(map[string]bool, len(u.Branches))
	for _, b := range u.Branches {
		named[b] = true
	}
	return func(branch string) bool {
		if named[branch] {
			return true
		}
		for _, p := range u.Prefixes {
			if strings.HasPrefix(branch, p) {
				return true
			}
		}
		return false
	}
}

func visitList(u Update, heads map[string]plumbing.Hash) []string {
	seen := map[string]bool{}
	var out []string
	for _, b := range u.Branches {
		if !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	for b := range heads {
		if seen[b] {
			continue
		}
		for _, p := range u.Prefixes {
			if strings.HasPrefix(b, p) {
				seen[b] = true
				out = append(out, b)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// refreshPrefix lists the branches whose names start with prefix (over HTTP(S), Git protocol
// v2's ls-refs with a ref-prefix where the server speaks it) and fetches the wanted ones whose
// head objs lacks. It returns wanted branch → head. Wanted branches whose head is refused for
// its size, now or before (a head is not fetched again until it moves), are left out of heads
// and returned in refused; so are branches whose head the caller knows already (known returns
// true; nil means none). The listing and the fetch run off the store's lock: the fetch lands in
// a scratch clone whose objects objs adopts.
func (s *Store) refreshPrefix(ctx context.Context, auth transport.AuthMethod, objs *objects, prefix string, want func(branch string) bool, known func(branch, head string) bool) (map[string]plumbing.Hash, map[string]refusal, error) {
	refs, proto, err := s.list(ctx, auth, prefix)
	if err != nil && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return nil, nil, classify(err, s.opts.URL)
	}
	refused := map[string]refusal{}
	heads := map[string]plumbing.Hash{}
	var fetch []config.RefSpec
	s.mu.Lock()
	for _, r := range refs {
		if !r.Name().IsBranch() || r.Type() != plumbing.HashReference {
			continue
		}
		branch := r.Name().Short()
		if !want(branch) {
			continue
		}
		if rf, ok := s.refused[branch]; ok && rf.head == r.Hash() {
			refused[branch] = rf // refused before, and not moved since
			continue
		}
		delete(s.refused, branch)
		if known != nil && known(branch, r.Hash().String()) {
			continue
		}
		heads[branch] = r.Hash()
		if !objs.has(r.Hash()) {
			fetch = append(fetch, config.RefSpec("+"+r.Name().String()+":"+remoteRef(branch).String()))
		}
	}
	s.mu.Unlock()
	if len(fetch) == 0 {
		return heads, refused, nil
	}
	sc, err := s.scratch()
	if err != nil {
		return nil, nil, err
	}
	if proto == gitrefs.V2 {
		// The server listed with v2: the fetch asks for the heads by hash, with no advertisement
		// of the repository's other refs.
		sc.v2 = func(spec config.RefSpec) plumbing.Hash { return heads[plumbing.ReferenceName(spec.Src()).Short()] }
	}
	err = sc.fetch(ctx, auth, fetch)
	var limit *gitpack.LimitError
	if errors.As(err, &limit) {
		// One ref's content past the limits must not hold up the others: each is fetched on
		// its own, and the ones refused are left out and named.
		fresh := map[string]refusal{}
		err = sc.fetchEach(ctx, auth, fetch, heads, fresh)
		s.mu.Lock()
		for b, rf := range fresh {
			s.refused[b], refused[b] = rf, rf
		}
		s.mu.Unlock()
	}
	if err != nil {
		return nil, nil, classify(err, s.opts.URL)
	}
	objs.adopt(&sc.storage.ObjectStorage)
	return heads, refused, nil
}

// refusedError is the error of a write or read that needs every branch it asked for: a branch
// refused for its size is not a branch that is missing.
func refusedError(refused map[string]refusal) error {
	branches := make([]string, 0, len(refused))
	for b := range refused {
		branches = append(branches, b)
	}
	if len(branches) == 0 {
		return nil
	}
	sort.Strings(branches)
	return &gitpack.LimitError{Message: fmt.Sprintf("branch %s: %s", branches[0], refused[branches[0]].message)}
}

func (c *scratch) fetch(ctx context.Context, auth transport.AuthMethod, specs []config.RefSpec) error {
	if c.v2 != nil {
		wants := make([]string, 0, len(specs))
		for _, spec := range specs {
			wants = append(wants, c.v2(spec).String())
		}
		w, err := c.guard.PackfileWriter()
		if err != nil {
			return err
		}
		_, err = gitrefs.FetchCommits(ctx, c.remote.Config().URLs[0], auth, wants, w)
		if cerr := w.Close(); err == nil {
			err = cerr // the guard's verdict on the whole pack
		}
		return err
	}
	err := c.remote.FetchContext(ctx, &git.FetchOptions{RemoteName: remoteName, RefSpecs: specs, Auth: auth, Tags: git.NoTags, Depth: 1})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	return err
}

// fetchEach fetches refs one at a time, each bounded by RefFetchLimits; a ref refused for its
// size moves from heads to refused, with its head, so that it is not fetched again until it
// moves.
func (c *scratch) fetchEach(ctx context.Context, auth transport.AuthMethod, specs []config.RefSpec, heads map[string]plumbing.Hash, refused map[string]refusal) error {
	c.guard.limits = RefFetchLimits
	defer func() { c.guard.limits = FetchLimits }()
	for _, spec := range specs {
		err := c.fetch(ctx, auth, []config.RefSpec{spec})
		var limit *gitpack.LimitError
		switch {
		case errors.As(err, &limit):
			branch := plumbing.ReferenceName(spec.Src()).Short()
			refused[branch] = refusal{head: heads[branch], message: limit.Message}
			delete(heads, branch)
		case err != nil:
			return err
		}
	}
	return nil
}

// list lists the remote's refs: with a prefix over HTTP(S), only the branches under it. It
// says which protocol the server answered with.
func (s *Store) list(ctx context.Context, auth transport.AuthMethod, prefix string) ([]*plumbing.Reference, gitrefs.Protocol, error) {
	if prefix == "" || !gitrefs.Supported(s.opts.URL) {
		remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: remoteName, URLs: []string{s.opts.URL}})
		refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth})
		return refs, gitrefs.V0, err
	}
	heads, proto, err := s.lister.List(ctx, s.opts.URL, auth, plumbing.NewBranchReferenceName(prefix).String())
	if err != nil {
		return nil, proto, err
	}
	refs := make([]*plumbing.Reference, 0, len(heads))
	for name, hash := range heads {
		refs = append(refs, plumbing.NewHashReference(plumbing.ReferenceName(name), plumbing.NewHash(hash)))
	}
	return refs, proto, nil
}

// Heads lists the remote's branches and their heads, fetching what is new.
func (s *Store) Heads(ctx context.Context) (map[string]string, error) {
	auth, _, err := s.opts.Credentials(ctx)
	if err != nil {
		return nil, &ConfigError{Err: err}
	}
	heads, refused, err := s.refreshPrefix(ctx, auth, s.clone(), "", func(string) bool { return true }, nil)
	if err == nil {
		err = refusedError(refused)
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(heads))
	for b, h := range heads {
		out[b] = h.String()
	}
	return out, nil
}

// BranchFile is one file read from a branch head.
type BranchFile struct {
	Commit  string
	Content []byte
	// Refused, when set, says why the head was not fetched: Content is empty.
	Refused string
	commit  *object.Commit
}

// VerifySignature checks that the head commit the file was read from is signed by one of the
// armored public keys, and returns the signer's fingerprint.
func (f BranchFile) VerifySignature(armoredKeys []string) (string, error) {
	if f.commit == nil {
		return "", errors.New("the commit was not read")
	}
	return gitauth.VerifyCommit(f.commit, armoredKeys)
}

// ReadFiles lists the remote once, fetches the branches under prefix whose head moved, and
// returns file from each head (branches without the file are left out). Branches whose head
// the caller already has (known returns true; nil means none) are not read at all. A branch
// whose head is refused for its size comes back with Refused set and no content; the others
// are read as usual.
func (s *Store) ReadFiles(ctx context.Context, prefix, file string, known func(branch, commit string) bool) (map[string]BranchFile, error) {
	auth, _, err := s.opts.Credentials(ctx)
	if err != nil {
		return nil, &ConfigError{Err: err}
	}
	objs := s.clone()
	heads, refused, err := s.refreshPrefix(ctx, auth, objs, prefix, func(b string) bool { return strings.HasPrefix(b, prefix) }, nil)
	if err != nil {
		return nil, err
	}
	return readEach(objs, heads, refused, prefix, file, known)
}

// readEach reads file from each head (a known one is skipped), and names the refused ones.
func readEach(objs *objects, heads map[string]plumbing.Hash, refused map[string]refusal, prefix, file string, known func(branch, commit string) bool) (map[string]BranchFile, error) {
	out := map[string]BranchFile{}
	for branch, rf := range refused {
		out[branch] = BranchFile{Commit: rf.head.String(), Refused: rf.message}
	}
	for branch, head := range heads {
		if !strings.HasPrefix(branch, prefix) || (known != nil && known(branch, head.String())) {
			continue
		}
		tree, _, err := objs.treeAt(head)
		if err != nil {
			return nil, err
		}
		if !tree.Has(file) {
			continue
		}
		b, err := tree.Read(file)
		if err != nil {
			return nil, err
		}
		c, err := object.GetCommit(objs, head)
		if err != nil {
			return nil, err
		}
		out[branch] = BranchFile{Commit: head.String(), Content: b, commit: c}
	}
	return out, nil
}

func remoteRef(branch string) plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName(remoteName, branch)
}

// treeAt is an editable copy of a commit's tree (empty for no commit) and the tree's hash.
func (o *objects) treeAt(commit plumbing.Hash) (*Tree, plumbing.Hash, error) {
	if commit.IsZero() {
		return newTree(o, nil), plumbing.ZeroHash, nil
	}
	o.mu.RLock()
	ft, ok := o.index[commit]
	o.mu.RUnlock()
	if !ok {
		entries, tree, err := flatten(o, commit)
		if err != nil {
			return nil, plumbing.ZeroHash, err
		}
		ft = flatTree{entries: entries, tree: tree}
		o.remember(commit, ft)
	}
	return newTree(o, ft.entries), ft.tree, nil
}

// remember caches a commit's flattened tree, which is never changed afterwards.
func (o *objects) remember(commit plumbing.Hash, ft flatTree) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.index) >= maxIndexedCommits {
		o.index = map[plumbing.Hash]flatTree{}
	}
	o.index[commit] = ft
}

func commitObject(objs *objects, tree, parent plumbing.Hash, msg string, signer *openpgp.Entity, opts Options) (plumbing.Hash, error) {
	sig := object.Signature{Name: opts.AuthorName, Email: opts.AuthorEmail, When: opts.Now()}
	c := &object.Commit{Author: sig, Committer: sig, Message: msg, TreeHash: tree}
	if !parent.IsZero() {
		c.ParentHashes = []plumbing.Hash{parent}
	}
	if signer != nil {
		if err := gitauth.SignCommit(c, signer); err != nil {
			return plumbing.ZeroHash, &ConfigError{Err: err}
		}
	}
	o := objs.NewEncodedObject()
	if err := c.Encode(o); err != nil {
		return plumbing.ZeroHash, err
	}
	return objs.SetEncodedObject(o)
}

// BranchNotFoundError says a branch the store was asked to read does not exist.
type BranchNotFoundError struct{ Branch string }

func (e *BranchNotFoundError) Error() string {
	return fmt.Sprintf("branch %q does not exist in the repository yet", e.Branch)
}

// ReadBranch lists the remote once, fetches the branch when it moved, and returns its head and
// every file under prefix ("" for all) at that head.
func (s *Store) ReadBranch(ctx context.Context, branch, prefix string) (string, map[string][]byte, error) {
	auth, _, err := s.opts.Credentials(ctx)
	if err != nil {
		return "", nil, &ConfigError{Err: err}
	}
	objs := s.clone()
	heads, refused, err := s.refreshPrefix(ctx, auth, objs, branch, func(b string) bool { return b == branch }, nil)
	if err == nil {
		err = refusedError(refused)
	}
	if err != nil {
		return "", nil, err
	}
	head, ok := heads[branch]
	if !ok {
		return "", nil, &BranchNotFoundError{Branch: branch}
	}
	tree, _, err := objs.treeAt(head)
	if err != nil {
		return "", nil, err
	}
	files, err := tree.files(prefix)
	if err != nil {
		return "", nil, err
	}
	return head.String(), files, nil
}
