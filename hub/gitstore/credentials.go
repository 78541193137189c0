package gitstore

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	gossh "golang.org/x/crypto/ssh"
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

// AuthFromSecret builds the auth method for url from a Secret: username/password or
// bearerToken for HTTP(S); identity (and known_hosts) for SSH. A nil Secret means no auth.
func AuthFromSecret(secret *corev1.Secret, url string) (transport.AuthMethod, error) {
	if secret == nil {
		return nil, nil
	}
	d := secret.Data
	isSSH := strings.HasPrefix(url, "ssh://") || (!strings.Contains(url, "://") && strings.Contains(url, "@"))
	if isSSH {
		if len(d[SecretIdentity]) == 0 {
			return nil, fmt.Errorf("secret %s/%s has no %q key for the SSH URL", secret.Namespace, secret.Name, SecretIdentity)
		}
		user := string(d[SecretUsername])
		if user == "" {
			user = "git"
		}
		keys, err := gitssh.NewPublicKeys(user, d[SecretIdentity], string(d[SecretPassword]))
		if err != nil {
			return nil, fmt.Errorf("secret %s/%s: invalid SSH identity: %w", secret.Namespace, secret.Name, err)
		}
		if kh := d[SecretKnownHosts]; len(kh) > 0 {
			cb, err := knownHostsCallback(kh)
			if err != nil {
				return nil, fmt.Errorf("secret %s/%s: invalid known_hosts: %w", secret.Namespace, secret.Name, err)
			}
			keys.HostKeyCallback = cb
		} else {
			return nil, fmt.Errorf("secret %s/%s has no %q key: refusing to trust any SSH host key", secret.Namespace, secret.Name, SecretKnownHosts)
		}
		return keys, nil
	}
	if tok := d[SecretBearerToken]; len(tok) > 0 {
		return &githttp.TokenAuth{Token: string(tok)}, nil
	}
	if len(d[SecretUsername]) > 0 || len(d[SecretPassword]) > 0 {
		return &githttp.BasicAuth{Username: string(d[SecretUsername]), Password: string(d[SecretPassword])}, nil
	}
	return nil, nil
}

func knownHostsCallback(data []byte) (gossh.HostKeyCallback, error) {
	type entry struct {
		hosts []string
		key   gossh.PublicKey
	}
	var entries []entry
	rest := data
	for len(bytes.TrimSpace(rest)) > 0 {
		_, hosts, key, _, r, err := gossh.ParseKnownHosts(rest)
		if err != nil {
			return nil, err
		}
		entries = append(entries, entry{hosts: hosts, key: key})
		rest = r
	}
	return func(hostname string, _ net.Addr, key gossh.PublicKey) error {
		host := strings.TrimSuffix(hostname, ":22")
		for _, e := range entries {
			for _, h := range e.hosts {
				if (h == hostname || h == host || h == "["+host+"]") && bytes.Equal(e.key.Marshal(), key.Marshal()) {
					return nil
				}
			}
		}
		return fmt.Errorf("host key of %s is not in known_hosts", hostname)
	}, nil
}

// SignerFromSecret reads the armored private key (and passphrase) for signing commits.
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
		return nil, errors.New("the signing key Secret holds no private key")
	}
	e := list[0]
	if e.PrivateKey.Encrypted {
		pass := secret.Data[SecretPassphrase]
		if err := e.PrivateKey.Decrypt(pass); err != nil {
			return nil, fmt.Errorf("secret %s/%s: cannot decrypt the signing key with the given passphrase: %w", secret.Namespace, secret.Name, err)
		}
		for _, sub := range e.Subkeys {
			if sub.PrivateKey != nil && sub.PrivateKey.Encrypted {
				if err := sub.PrivateKey.Decrypt(pass); err != nil {
					return nil, fmt.Errorf("cannot decrypt a signing subkey: %w", err)
				}
			}
		}
	}
	return e, nil
}
