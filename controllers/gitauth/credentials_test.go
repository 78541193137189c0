package gitauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gossh "golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

func secret(kv ...string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "cellsync-system", Name: "git"}, Data: map[string][]byte{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.Data[kv[i]] = []byte(kv[i+1])
	}
	return s
}

func TestAuthFromSecret(t *testing.T) {
	a, err := AuthFromSecret(secret(SecretUsername, "u", SecretPassword, "p"), "https://git.example.com/x.git")
	if b, ok := a.(*githttp.BasicAuth); err != nil || !ok || b.Username != "u" || b.Password != "p" {
		t.Fatalf("basic auth: %#v, %v", a, err)
	}
	if strings.Contains(a.String(), "u:p") {
		t.Fatalf("auth String() leaks the password: %s", a.String())
	}
	a, err = AuthFromSecret(secret(SecretBearerToken, "tok"), "https://git.example.com/x.git")
	if tk, ok := a.(*githttp.TokenAuth); err != nil || !ok || tk.Token != "tok" {
		t.Fatalf("token auth: %#v, %v", a, err)
	}
	if a, err = AuthFromSecret(nil, "https://x"); a != nil || err != nil {
		t.Fatalf("no secret means no auth: %#v %v", a, err)
	}

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	identity := string(pem.EncodeToMemory(block))
	hostKey, _ := gossh.NewPublicKey(pub)
	knownHosts := "git.example.com " + string(gossh.MarshalAuthorizedKey(hostKey))

	a, err = AuthFromSecret(secret(SecretIdentity, identity, SecretKnownHosts, knownHosts), "ssh://git@git.example.com/x.git")
	keys, ok := a.(*sshKeys)
	if err != nil || !ok || keys.User != "git" {
		t.Fatalf("ssh auth: %#v, %v", a, err)
	}
	// Only the key type known_hosts has for the host is offered to the server.
	if cfg, err := keys.ClientConfig(); err != nil || strings.Join(cfg.HostKeyAlgorithms, ",") != gossh.KeyAlgoED25519 {
		t.Fatalf("host key algorithms: %v, %v", cfg.HostKeyAlgorithms, err)
	}
	if err := keys.HostKeyCallback("git.example.com:22", nil, hostKey); err != nil {
		t.Fatalf("known host refused: %v", err)
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	otherKey, _ := gossh.NewPublicKey(other)
	if err := keys.HostKeyCallback("git.example.com:22", nil, otherKey); err == nil {
		t.Fatal("an unknown host key was accepted")
	}

	for name, s := range map[string]*corev1.Secret{
		"ssh without known_hosts": secret(SecretIdentity, identity),
		"ssh without identity":    secret(SecretKnownHosts, knownHosts),
		"ssh with a bad key":      secret(SecretIdentity, "not a key", SecretKnownHosts, knownHosts),
	} {
		if _, err := AuthFromSecret(s, "git@git.example.com:x.git"); err == nil {
			t.Errorf("%s: want an error", name)
		} else if !strings.Contains(err.Error(), "cellsync-system/git") {
			t.Errorf("%s: the error does not name the Secret: %v", name, err)
		}
	}
}

func TestSignerFromSecretErrors(t *testing.T) {
	if _, err := SignerFromSecret(secret()); err == nil || !strings.Contains(err.Error(), SecretSigningKey) {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := SignerFromSecret(secret(SecretSigningKey, "garbage")); err == nil {
		t.Fatal("garbage key accepted")
	}
}

// The hub and the agent give a refused credential the same reason; a password in a URL is
// refused on both sides with a pointer to the Secret.
func TestSharedReasonsAndURLs(t *testing.T) {
	if agentv1alpha1.ReasonGitAuthFailed != hubv1alpha1.ReasonGitAuthFailed {
		t.Fatalf("a refused credential is %q on the agent but %q on the hub", agentv1alpha1.ReasonGitAuthFailed, hubv1alpha1.ReasonGitAuthFailed)
	}
	for _, u := range []string{"https://u:p@git.example.com/x.git", "ssh://git:pw@git.example.com/x.git"} {
		err := CheckURL(u)
		if err == nil || !strings.Contains(err.Error(), "secretRef") || strings.Contains(err.Error(), ":p@") || strings.Contains(err.Error(), "pw") {
			t.Errorf("%s: want a refusal pointing at secretRef without the password, got %v", RedactURL(u), err)
		}
	}
	for _, u := range []string{"https://git.example.com/x.git", "https://token@git.example.com/x.git", "git@github.com:org/repo.git"} {
		if err := CheckURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}
