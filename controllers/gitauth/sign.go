package gitauth

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ProtonMail/go-crypto/openpgp"
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
