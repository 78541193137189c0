package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Workdir is a git clone of a repository's source branch, the way a person edits it: write or
// delete files, commit, push.
type Workdir struct {
	Dir    string
	Branch string
}

// CloneSource clones url (with credentials in it) into dir for branch; a branch that does not
// exist yet starts empty and is created by the first push.
func CloneSource(url, dir, branch string) (*Workdir, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"init", "-q", "--initial-branch=" + branch},
		{"config", "user.name", "cellsync demo"},
		{"config", "user.email", "demo@cellsync.io"},
		{"remote", "add", "origin", url},
	}
	for _, s := range steps {
		if _, err := Git(dir, s...); err != nil {
			return nil, err
		}
	}
	out, err := Git(dir, "ls-remote", "--heads", "origin", branch)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(out) != "" {
		if _, err := Git(dir, "pull", "-q", "origin", branch); err != nil {
			return nil, err
		}
	}
	return &Workdir{Dir: dir, Branch: branch}, nil
}

// Commit writes files (path → content; "" deletes the path), commits them and pushes. It
// returns the new commit.
func (w *Workdir) Commit(message string, files map[string]string) (string, error) {
	for p, content := range files {
		full := filepath.Join(w.Dir, filepath.FromSlash(p))
		if content == "" {
			if err := os.Remove(full); err != nil && !os.IsNotExist(err) {
				return "", err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
			return "", err
		}
		if err := os.WriteFile(full, []byte(content), 0o600); err != nil {
			return "", err
		}
	}
	if _, err := Git(w.Dir, "add", "-A"); err != nil {
		return "", err
	}
	if _, err := Git(w.Dir, "commit", "-q", "--allow-empty", "-m", message); err != nil {
		return "", err
	}
	if _, err := Git(w.Dir, "push", "-q", "origin", "HEAD:refs/heads/"+w.Branch); err != nil {
		return "", fmt.Errorf("git push: %w", err)
	}
	out, err := Git(w.Dir, "rev-parse", "HEAD")
	return strings.TrimSpace(out), err
}
