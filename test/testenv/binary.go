package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

var (
	binMu    sync.Mutex
	binaries = map[string]string{}
)

// Binary builds a command of this module (for example "./agent/cmd/agent") once per test
// process, as `make build` builds what the images ship (static, trimmed, stripped), and returns
// its path: tests that run the real binary run what users install.
func Binary(pkg string) (string, error) {
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := binaries[pkg]; ok {
		return p, nil
	}
	dir, err := os.MkdirTemp("", "cellsync-bin-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v: %s", pkg, err, b)
	}
	binaries[pkg] = out
	return out, nil
}

// Process is a running binary with its output in a log file.
type Process struct {
	Cmd *exec.Cmd
	Log string
}

// StartAgentProcess runs the real agent binary against the cluster for the CellSyncs of
// namespace, with extra flags after the defaults.
func StartAgentProcess(kubeconfig, namespace, dataDir string, extra ...string) (*Process, error) {
	logf, err := os.CreateTemp("", "cellsync-agent-*.log")
	if err != nil {
		return nil, err
	}
	_ = logf.Close()
	args := append([]string{"--kubeconfig=" + kubeconfig, "--namespace=" + namespace, "--data-dir=" + dataDir,
		"--leader-elect=false", "--metrics-bind-address=0", "--health-probe-bind-address=0"}, extra...)
	return startBinary("./agent/cmd/agent", logf.Name(), args...)
}

// startBinary runs a command of this module with args, its output in logPath; it is killed if
// this process dies.
func startBinary(pkg, logPath string, args ...string) (*Process, error) {
	bin, err := Binary(pkg)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &Process{Cmd: cmd, Log: logPath}, nil
}

// Stop ends the process (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (p *Process) Stop() {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-done
	}
}

// Output is what the process printed so far.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}
