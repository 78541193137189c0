package gitauth

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	hostkeydb "github.com/skeema/knownhosts"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	corev1 "k8s.io/api/core/v1"
)

// Secret keys, as Flux uses them.
const (
	SecretUsername    = "username"
	SecretPassword    = "password"
	SecretBearerToken = "bearerToken"
	SecretIdentity    = "identity"
	SecretKnownHosts  = "known_hosts"
	SecretPassphrase  = "passphrase"
	// SecretSigningKey holds an armored OpenPGP private key for signing commits.
	SecretSigningKey = "git.asc"
)

// CheckURL refuses a repository URL that carries a password or token: credentials belong in a
// Secret, never in a spec, a flag or the Git config on disk.
func CheckURL(rawURL string) error {
	if !strings.Contains(rawURL, "://") {
		return nil // scp form (git@host:org/repo): no password can be written there
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("the Git URL %q cannot be parsed: %w", RedactURL(rawURL), err)
	}
	if _, has := u.User.Password(); has {
		return fmt.Errorf("the Git URL %s carries a password; put the credentials in the Git credentials Secret (secretRef: username/password or bearerToken) and remove them from the URL", RedactURL(rawURL))
	}
	return nil
}

// IsSSH reports whether url is an SSH URL (ssh:// or the scp form user@host:path).
func IsSSH(rawURL string) bool {
	return strings.HasPrefix(rawURL, "ssh://") || (!strings.Contains(rawURL, "://") && strings.Contains(rawURL, "@"))
}

// AuthFromSecret builds the auth method for url from a Secret: username/password or
// bearerToken for HTTP(S); identity and known_hosts for SSH. A nil Secret means no auth.
func AuthFromSecret(secret *corev1.Secret, rawURL string) (transport.AuthMethod, error) {
	if err := CheckURL(rawURL); err != nil {
		return nil, err
	}
	if secret == nil {
		return nil, nil
	}
	d := secret.Data
	if IsSSH(rawURL) {
		return sshAuth(secret, rawURL)
	}
	if tok := d[SecretBearerToken]; len(tok) > 0 {
		return &githttp.TokenAuth{Token: string(tok)}, nil
	}
	if len(d[SecretUsername]) > 0 || len(d[SecretPassword]) > 0 {
		return &githttp.BasicAuth{Username: string(d[SecretUsername]), Password: string(d[SecretPassword])}, nil
	}
	return nil, nil
}

func sshAuth(secret *corev1.Secret, rawURL string) (transport.AuthMethod, error) {
	d := secret.Data
	if len(d[SecretIdentity]) == 0 {
		return nil, fmt.Errorf("secret %s/%s has no %q key for the SSH URL", secret.Namespace, secret.Name, SecretIdentity)
	}
	if len(d[SecretKnownHosts]) == 0 {
		return nil, fmt.Errorf("secret %s/%s has no %q key: refusing to trust any SSH host key", secret.Namespace, secret.Name, SecretKnownHosts)
	}
	user := string(d[SecretUsername])
	if user == "" {
		user = "git"
	}
	keys, err := gitssh.NewPublicKeys(user, d[SecretIdentity], string(d[SecretPassword]))
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: invalid SSH identity: %w", secret.Namespace, secret.Name, err)
	}
	cb, algorithms, err := hostKeyCheck(d[SecretKnownHosts], sshHostPort(rawURL))
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: invalid known_hosts: %w", secret.Namespace, secret.Name, err)
	}
	keys.HostKeyCallback = cb
	return &sshKeys{PublicKeys: keys, algorithms: algorithms}, nil
}

// sshKeys offers the server only the host key algorithms known_hosts can vouch for, as OpenSSH
// does: a server that has both a plain host key and a host certificate would otherwise present
// the certificate (the SSH library prefers it) to a client that only knows the plain key, and
// the other way round.
type sshKeys struct {
	*gitssh.PublicKeys
	algorithms []string
}

// ClientConfig is the SSH client configuration with the host key algorithms set.
func (k *sshKeys) ClientConfig() (*gossh.ClientConfig, error) {
	c, err := k.PublicKeys.ClientConfig()
	if err == nil && len(k.algorithms) > 0 {
		c.HostKeyAlgorithms = k.algorithms
	}
	return c, err
}

// sshHostPort is the host:port an SSH URL connects to, as known_hosts matches it.
func sshHostPort(rawURL string) string {
	host, port := "", "22"
	if u, err := url.Parse(rawURL); err == nil && strings.Contains(rawURL, "://") {
		host = u.Hostname()
		if u.Port() != "" {
			port = u.Port()
		}
	} else {
		// scp form: [user@]host:path
		host, _, _ = strings.Cut(rawURL, ":")
		if i := strings.LastIndex(host, "@"); i >= 0 {
			host = host[i+1:]
		}
	}
	return net.JoinHostPort(host, port)
}

// hostKeyCheck checks host keys against known_hosts content with x/crypto's knownhosts, which
// understands every form OpenSSH writes: hashed hosts, [host]:port, @revoked and
// @cert-authority. A refusal names the host and says why. It also returns the host key
// algorithms known_hosts has for hostPort (certificate algorithms for a @cert-authority entry).
func hostKeyCheck(knownHosts []byte, hostPort string) (gossh.HostKeyCallback, []string, error) {
	// knownhosts reads files only. known_hosts holds public keys, nothing secret; the file is
	// gone again before this returns.
	f, err := os.CreateTemp("", "cellsync-known-hosts-")
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = os.Remove(f.Name()) }()
	_, werr := f.Write(knownHosts)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, nil, werr
	}
	// skeema's database wraps x/crypto's checker and also reads which key types (and CAs) each
	// host has, for the algorithm negotiation.
	db, err := hostkeydb.NewDB(f.Name())
	if err != nil {
		return nil, nil, err
	}
	var algorithms []string
	if hostPort != "" {
		algorithms = db.HostKeyAlgorithms(hostPort)
	}
	check := db.HostKeyCallback()
	return func(hostname string, remote net.Addr, key gossh.PublicKey) error {
		if remote == nil {
			remote = &net.TCPAddr{IP: net.IPv4zero} // knownhosts also matches the address; none is known
		}
		err := check(hostname, remote, key)
		var revoked *knownhosts.RevokedError
		var mismatch *knownhosts.KeyError
		cert, isCert := key.(*gossh.Certificate)
		switch {
		case err == nil:
			return nil
		case errors.As(err, &revoked):
			return &HostKeyError{Message: fmt.Sprintf("the SSH host key of %s (%s) is marked @revoked in known_hosts; refusing to connect", hostname, gossh.FingerprintSHA256(key))}
		case errors.As(err, &mismatch) && len(mismatch.Want) > 0:
			return &HostKeyError{Message: fmt.Sprintf("the SSH host key of %s (%s) does not match the key known_hosts has for it; refusing to connect", hostname, gossh.FingerprintSHA256(key))}
		case errors.As(err, &mismatch):
			return &HostKeyError{Message: fmt.Sprintf("the SSH host %s (key %s) is not in known_hosts; add it to the Secret's known_hosts (ssh-keyscan)", hostname, gossh.FingerprintSHA256(key))}
		case isCert:
			return &HostKeyError{Message: fmt.Sprintf("the SSH host %s presents a certificate signed by %s, which known_hosts does not trust for it (%v); add the CA as a @cert-authority line, or the host's own key (ssh-keyscan), to the Secret's known_hosts", hostname, gossh.FingerprintSHA256(cert.SignatureKey), err)}
		default:
			return &HostKeyError{Message: fmt.Sprintf("cannot check the SSH host key of %s: %v", hostname, err)}
		}
	}, algorithms, nil
}

// HostKeyError is an SSH host whose key is not trusted: a person must fix known_hosts.
type HostKeyError struct{ Message string }

func (e *HostKeyError) Error() string { return e.Message }

// SignerFromSecret reads the armored private key (and passphrase) for signing commits. A nil
// Secret means no signing.
func SignerFromSecret(secret *corev1.Secret) (*openpgp.Entity, error) {
	if secret == nil {
		return nil, nil
	}
	key := secret.Data[SecretSigningKey]
	if len(key) == 0 {
		return nil, fmt.Errorf("secret %s/%s has no %q key with an armored OpenPGP private key", secret.Namespace, secret.Name, SecretSigningKey)
	}
	list, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(key))
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: cannot read the signing key: %w", secret.Namespace, secret.Name, err)
	}
	if len(list) == 0 || list[0].PrivateKey == nil {
		return nil, fmt.Errorf("secret %s/%s holds no private key under %q", secret.Namespace, secret.Name, SecretSigningKey)
	}
	e := list[0]
	pass := secret.Data[SecretPassphrase]
	if e.PrivateKey.Encrypted {
		if err := e.PrivateKey.Decrypt(pass); err != nil {
			return nil, fmt.Errorf("secret %s/%s: cannot decrypt the signing key with the given passphrase: %w", secret.Namespace, secret.Name, err)
		}
	}
	for _, sub := range e.Subkeys {
		if sub.PrivateKey != nil && sub.PrivateKey.Encrypted {
			if err := sub.PrivateKey.Decrypt(pass); err != nil {
				return nil, fmt.Errorf("secret %s/%s: cannot decrypt a signing subkey: %w", secret.Namespace, secret.Name, err)
			}
		}
	}
	return e, nil
}
