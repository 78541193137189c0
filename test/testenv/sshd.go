package testenv

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// SSHServer is Debian's real sshd on 127.0.0.1 at a free high port, serving Git over SSH for
// one client key, the way a Git host does (the client runs git-upload-pack and
// git-receive-pack).
type SSHServer struct {
	Port int
	// HostKey is the server's public host key.
	HostKey gossh.PublicKey
	// HostCA is the key of the CA that signed the server's host certificate for 127.0.0.1 (the
	// server offers the plain host key and the certificate).
	HostCA gossh.PublicKey
	// ClientKey is the PEM private key the server accepts.
	ClientKey []byte
	cmd       *exec.Cmd
	dir       string
}

// StartSSHServer starts sshd; it needs openssh-server (installed by .ci/run) and root.
func StartSSHServer() (*SSHServer, error) {
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/sshd"); serr != nil {
			return nil, fmt.Errorf("sshd is not installed (apt-get install openssh-server; .ci/run does)")
		}
		sshd = "/usr/sbin/sshd"
	}
	dir, err := os.MkdirTemp("", "cellsync-sshd-")
	if err != nil {
		return nil, err
	}
	s := &SSHServer{dir: dir}
	hostPub, hostPEM, err := newED25519()
	if err != nil {
		return nil, err
	}
	clientPub, clientPEM, err := newED25519()
	if err != nil {
		return nil, err
	}
	s.HostKey, s.ClientKey = hostPub, clientPEM
	hostCert, err := s.signHostCert(hostPub)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"host_key":          hostPEM,
		"host_key-cert.pub": hostCert,
		"authorized_keys":   gossh.MarshalAuthorizedKey(clientPub),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.Port = l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	_ = os.MkdirAll("/run/sshd", 0o755)
	config := strings.Join([]string{
		fmt.Sprintf("Port %d", s.Port), "ListenAddress 127.0.0.1",
		"HostKey " + filepath.Join(dir, "host_key"), "HostCertificate " + filepath.Join(dir, "host_key-cert.pub"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
		"PermitRootLogin prohibit-password", "PidFile " + filepath.Join(dir, "sshd.pid"),
		"LogLevel ERROR", "",
	}, "\n")
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		return nil, err
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port)); err == nil {
			_ = c.Close()
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
	s.Close()
	return nil, fmt.Errorf("sshd did not listen on port %d: %s", s.Port, b)
}

// URL is an ssh:// URL for a repository folder on this machine.
func (s *SSHServer) URL(repoDir string) string {
	return fmt.Sprintf("ssh://root@127.0.0.1:%d%s", s.Port, repoDir)
}

// Close stops sshd and removes its files.
func (s *SSHServer) Close() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
	_ = os.RemoveAll(s.dir)
}

// signHostCert makes a CA, keeps its public key in HostCA, and returns a host certificate for
// key, valid for 127.0.0.1.
func (s *SSHServer) signHostCert(key gossh.PublicKey) ([]byte, error) {
	_, caPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	ca, err := gossh.NewSignerFromKey(caPriv)
	if err != nil {
		return nil, err
	}
	cert := &gossh.Certificate{Key: key, CertType: gossh.HostCert, KeyId: "cellsync-test-host",
		ValidPrincipals: []string{"127.0.0.1"}, ValidBefore: gossh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, err
	}
	s.HostCA = ca.PublicKey()
	return gossh.MarshalAuthorizedKey(cert), nil
}

func newED25519() (gossh.PublicKey, []byte, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, err
	}
	sshPub, err := gossh.NewPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return sshPub, pem.EncodeToMemory(block), nil
}
