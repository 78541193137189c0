package gitstore

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// Tree is a branch's files as a flat path → blob map, editable without a work tree.
// It implements cellbranch.Files.
type Tree struct {
	s       storer.EncodedObjectStorer
	entries map[string]plumbing.Hash
	paths   []string // sorted, nil when stale
	changed bool
}

func newTree(s storer.EncodedObjectStorer, entries map[string]plumbing.Hash) *Tree {
	c := make(map[string]plumbing.Hash, len(entries))
	for k, v := range entries {
		c[k] = v
	}
	return &Tree{s: s, entries: c}
}

// List returns every path, sorted.
func (t *Tree) List() []string {
	if t.paths == nil {
		t.paths = make([]string, 0, len(t.entries))
		for p := range t.entries {
			t.paths = append(t.paths, p)
		}
		sort.Strings(t.paths)
	}
	return t.paths
}

// Has reports whether the path exists.
func (t *Tree) Has(path string) bool { _, ok := t.entries[path]; return ok }

// Read returns a file's content.
func (t *Tree) Read(path string) ([]byte, error) {
	h, ok := t.entries[path]
	if !ok {
		return nil, fmt.Errorf("no file %q", path)
	}
	o, err := t.s.EncodedObject(plumbing.BlobObject, h)
	if err != nil {
		return nil, fmt.Errorf("failed to read blob of %q: %w", path, err)
	}
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer func() { _ = r.Close() }()
	return io.ReadAll(r)
}

// Write sets a file's content, storing the blob right away.
func (t *Tree) Write(path string, content []byte) {
	h := plumbing.ComputeHash(plumbing.BlobObject, content)
	if old, ok := t.entries[path]; ok && old == h {
		return
	}
	if !t.hasObject(h) {
		o := t.s.NewEncodedObject()
		o.SetType(plumbing.BlobObject)
		o.SetSize(int64(len(content)))
		w, _ := o.Writer()
		_, _ = w.Write(content)
		_ = w.Close()
		if _, err := t.s.SetEncodedObject(o); err != nil {
			// Memory storage does not fail; keep the tree unchanged if it ever does.
			return
		}
	}
	if _, ok := t.entries[path]; !ok {
		t.paths = nil
	}
	t.entries[path] = h
	t.changed = true
}

func (t *Tree) hasObject(h plumbing.Hash) bool {
	return t.s.HasEncodedObject(h) == nil
}

// files reads every file under prefix ("" for all).
func (t *Tree) files(prefix string) (map[string][]byte, error) {
	prefix = strings.Trim(prefix, "/")
	out := map[string][]byte{}
	for _, p := range t.List() {
		if prefix != "" && !strings.HasPrefix(p, prefix+"/") {
			continue
		}
		b, err := t.Read(p)
		if err != nil {
			return nil, err
		}
		out[p] = b
	}
	return out, nil
}

// Delete removes a file.
func (t *Tree) Delete(path string) {
	if _, ok := t.entries[path]; ok {
		delete(t.entries, path)
		t.paths = nil
		t.changed = true
	}
}

// Len is the number of files.
func (t *Tree) Len() int { return len(t.entries) }

// writeTree stores the nested tree objects and returns the root's hash.
func (t *Tree) writeTree() (plumbing.Hash, error) {
	type dir struct {
		files map[string]plumbing.Hash
		dirs  map[string]*dir
	}
	newDir := func() *dir { return &dir{files: map[string]plumbing.Hash{}, dirs: map[string]*dir{}} }
	root := newDir()
	for p, h := range t.entries {
		parts := strings.Split(p, "/")
		d := root
		for _, part := range parts[:len(parts)-1] {
			next, ok := d.dirs[part]
			if !ok {
				next = newDir()
				d.dirs[part] = next
			}
			d = next
		}
		d.files[parts[len(parts)-1]] = h
	}
	var write func(d *dir) (plumbing.Hash, error)
	write = func(d *dir) (plumbing.Hash, error) {
		tr := &object.Tree{}
		for name, h := range d.files {
			tr.Entries = append(tr.Entries, object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: h})
		}
		for name, sub := range d.dirs {
			h, err := write(sub)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			tr.Entries = append(tr.Entries, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h})
		}
		// Git orders entries by name, comparing a folder as if its name ended in "/".
		sort.Slice(tr.Entries, func(i, j int) bool { return gitName(tr.Entries[i]) < gitName(tr.Entries[j]) })
		o := t.s.NewEncodedObject()
		if err := tr.Encode(o); err != nil {
			return plumbing.ZeroHash, err
		}
		return t.s.SetEncodedObject(o)
	}
	return write(root)
}

func gitName(e object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}

// flatten reads a commit's tree into a path → blob map.
func flatten(s storer.EncodedObjectStorer, commit plumbing.Hash) (map[string]plumbing.Hash, plumbing.Hash, error) {
	c, err := object.GetCommit(s, commit)
	if err != nil {
		return nil, plumbing.ZeroHash, fmt.Errorf("failed to read commit %s: %w", commit, err)
	}
	tr, err := c.Tree()
	if err != nil {
		return nil, plumbing.ZeroHash, fmt.Errorf("failed to read tree of %s: %w", commit, err)
	}
	out := map[string]plumbing.Hash{}
	walker := object.NewTreeWalker(tr, true, nil)
	defer walker.Close()
	for {
		name, entry, err := walker.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, plumbing.ZeroHash, err
		}
		if entry.Mode.IsFile() {
			out[name] = entry.Hash
		}
	}
	return out, c.TreeHash, nil
}
