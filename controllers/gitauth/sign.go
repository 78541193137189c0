package gitauth

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// SignCommit sets the commit's OpenPGP signature over its encoding without one, as git does.
func SignCommit(c *object.Commit, signer *openpgp.Entity) error {
	unsigned := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(unsigned); err != nil {
		return err
	}
	r, err := unsigned.Reader()
	if err != nil {
		return err
	}
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, signer, r, nil); err != nil {
		return fmt.Errorf("failed to sign the commit: %w", err)
	}
	c.PGPSignature = sig.String()
	return nil
}

// ErrUnsigned is a commit without a signature.
var ErrUnsigned = errors.New("the commit is not signed")

// VerifyCommit checks that the commit is signed by one of the armored public keys and returns
// the signer's key fingerprint.
func VerifyCommit(c *object.Commit, armoredKeys []string) (string, error) {
	if c.PGPSignature == "" {
		return "", ErrUnsigned
	}
	for _, k := range armoredKeys {
		if e, err := c.Verify(k); err == nil {
			return fmt.Sprintf("%X", e.PrimaryKey.Fingerprint), nil
		}
	}
	return "", errors.New("the commit is not signed by any of the trusted keys")
}

// NewSigningKey makes an OpenPGP key for name and returns its armored private half (what a
// Secret's git.asc holds) and its armored public half (what a Cell's spec.reportKeys holds).
func NewSigningKey(name string) (private []byte, public string, err error) {
	e, err := openpgp.NewEntity(name, "", name+"@cellsync.io", nil)
	if err != nil {
		return nil, "", err
	}
	return armored(e)
}

// PublicKeyOf is the armored public half of an armored private key.
func PublicKeyOf(private []byte) (string, error) {
	list, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(private))
	if err != nil {
		return "", err
	}
	if len(list) == 0 {
		return "", errors.New("no key")
	}
	var pub bytes.Buffer
	w, err := armor.Encode(&pub, openpgp.PublicKeyType, nil)
	if err != nil {
		return "", err
	}
	if err := list[0].Serialize(w); err != nil {
		return "", err
	}
	_ = w.Close()
	return pub.String(), nil
}

func armored(e *openpgp.Entity) ([]byte, string, error) {
	var priv, pub bytes.Buffer
	w, err := armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	if err != nil {
		return nil, "", err
	}
	if err := e.SerializePrivate(w, nil); err != nil {
		return nil, "", err
	}
	_ = w.Close()
	w, err = armor.Encode(&pub, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, "", err
	}
	if err := e.Serialize(w); err != nil {
		return nil, "", err
	}
	_ = w.Close()
	return priv.Bytes(), pub.String(), nil
}
