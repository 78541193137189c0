package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// VerifyCommit runs `git verify-commit` on rev in repoDir with only key's public half trusted,
// in a throw-away GnuPG home, and returns git's output.
func VerifyCommit(repoDir, rev string, key *openpgp.Entity) (string, error) {
	home, err := os.MkdirTemp("", "cellsync-gnupg-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(home) }()
	var pub bytes.Buffer
	w, err := armor.Encode(&pub, openpgp.PublicKeyType, nil)
	if err != nil {
		return "", err
	}
	if err := key.Serialize(w); err != nil {
		return "", err
	}
	_ = w.Close()
	env := append(os.Environ(), "GNUPGHOME="+home)
	imp := exec.Command("gpg", "--batch", "--import")
	imp.Env, imp.Stdin = env, &pub
	if out, err := imp.CombinedOutput(); err != nil {
		return "", fmt.Errorf("gpg --import: %v: %s", err, out)
	}
	v := exec.Command("git", "-C", repoDir, "verify-commit", "-v", rev)
	v.Env = env
	out, err := v.CombinedOutput()
	return string(out), err
}
