package source_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cellsync/cellsync/agent/source"
	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/test/testenv"
)

// The agent pulls over a real sshd, trusting the host through known_hosts in every form
// OpenSSH writes (a host key or a CA that signed the host's certificate), and refuses a revoked
// or a wrong host key or CA with a message naming the host.
func TestPullOverSSH(t *testing.T) {
	sshd, err := testenv.StartSSHServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sshd.Close)
	repoDir := filepath.Join(t.TempDir(), "gitops.git")
	clone := t.TempDir()
	for _, args := range [][]string{{"init", "-q", "--bare", repoDir}, {"-C", clone, "init", "-q"}} {
		if _, err := testenv.Git(t.TempDir(), args...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := testenv.Git(clone, "commit", "-q", "--allow-empty", "-m", "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.Git(clone, "push", "-q", repoDir, "HEAD:refs/heads/cells/a"); err != nil {
		t.Fatal(err)
	}
	head, err := testenv.Git(clone, "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}

	host := fmt.Sprintf("[127.0.0.1]:%d", sshd.Port)
	hostKey := strings.TrimSpace(string(gossh.MarshalAuthorizedKey(sshd.HostKey)))
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := gossh.NewPublicKey(otherPub)
	otherKey := strings.TrimSpace(string(gossh.MarshalAuthorizedKey(other)))
	caKey := strings.TrimSpace(string(gossh.MarshalAuthorizedKey(sshd.HostCA)))

	tests := []struct {
		name       string
		knownHosts string
		refused    string
	}{
		{name: "[host]:port entry", knownHosts: host + " " + hostKey},
		{name: "hashed entry", knownHosts: knownhosts.HashHostname(host) + " " + hostKey},
		{name: "revoked key", knownHosts: "@revoked * " + hostKey + "\n" + host + " " + hostKey, refused: "marked @revoked"},
		{name: "wrong key", knownHosts: host + " " + otherKey, refused: "does not match the key known_hosts has"},
		{name: "unknown host", knownHosts: "[127.0.0.1]:1 " + hostKey, refused: "which known_hosts does not trust"},
		// The server offers a host certificate too: only what known_hosts vouches for is negotiated.
		{name: "@cert-authority", knownHosts: "@cert-authority " + host + " " + caKey},
		{name: "@cert-authority of another CA", knownHosts: "@cert-authority " + host + " " + otherKey, refused: "which known_hosts does not trust"},
		{name: "@revoked CA", knownHosts: "@revoked * " + caKey + "\n@cert-authority " + host + " " + caKey, refused: "revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "cellsync-system", Name: "git"}, Data: map[string][]byte{
				gitauth.SecretUsername: []byte("root"), gitauth.SecretIdentity: sshd.ClientKey, gitauth.SecretKnownHosts: []byte(tt.knownHosts + "\n"),
			}}
			url := sshd.URL(repoDir)
			auth, err := gitauth.AuthFromSecret(secret, url)
			if err != nil {
				t.Fatal(err)
			}
			repo, err := source.Open(t.TempDir(), url, "cells/a")
			if err != nil {
				t.Fatal(err)
			}
			got, err := repo.Head(context.Background(), auth)
			if tt.refused == "" {
				if err != nil || got != head {
					t.Fatalf("head = %q, %v; want %s", got, err, head)
				}
				if err := repo.Fetch(context.Background(), auth, got); err != nil {
					t.Fatal(err)
				}
				return
			}
			var authErr *gitauth.AuthError
			if !errorsAs(err, &authErr) || !strings.Contains(err.Error(), tt.refused) || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", sshd.Port)) {
				t.Fatalf("want a refusal naming the host and %q, got %v", tt.refused, err)
			}
		})
	}
}

// A password in the URL is refused before anything touches the disk.
func TestPasswordInURLIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mirror")
	_, err := source.Open(dir, "https://user:s3cret@git.example.com/x.git", "cells/a")
	if err == nil || !strings.Contains(err.Error(), "secretRef") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("want a refusal pointing at secretRef without the password, got %v", err)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
