package testenv

import (
	"bytes"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/cellsync/cellsync/controllers/gitauth"
)

// SigningKey is a fresh OpenPGP key with its armored private and public halves, as a Secret
// (git.asc) and a Cell's spec.reportKeys hold them.
type SigningKey struct {
	Entity  *openpgp.Entity
	Private []byte
	Public  string
}

// NewSigningKey makes a key for name.
func NewSigningKey(name string) (*SigningKey, error) {
	priv, pub, err := gitauth.NewSigningKey(name)
	if err != nil {
		return nil, err
	}
	list, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(priv))
	if err != nil {
		return nil, err
	}
	return &SigningKey{Entity: list[0], Private: priv, Public: pub}, nil
}
