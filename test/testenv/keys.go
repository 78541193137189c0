package testenv

import (
	"bytes"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
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
	e, err := openpgp.NewEntity(name, "", name+"@cellsync.io", nil)
	if err != nil {
		return nil, err
	}
	var priv, pub bytes.Buffer
	w, err := armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := e.SerializePrivate(w, nil); err != nil {
		return nil, err
	}
	_ = w.Close()
	w, err = armor.Encode(&pub, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := e.Serialize(w); err != nil {
		return nil, err
	}
	_ = w.Close()
	return &SigningKey{Entity: e, Private: priv.Bytes(), Public: pub.String()}, nil
}
