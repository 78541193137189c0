package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cellsync/cellsync/test/testenv"
)

// The quickstart, run as the README says (make demo ARGS=--once), runs to completion: it brings
// up every part, ships the sample app with git, walks the canary to 100 %, writes the kubeconfigs
// and the ready file, and exits 0.
func TestDemoOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	cmd := exec.Command("make", "demo", "ARGS=--once --workdir "+dir)
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "MAKEFLAGS=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("make demo ARGS=--once failed: %v\n%s", err, out.String())
	}
	for _, f := range []string{"ready", "hub.kubeconfig", "member-1.kubeconfig", "member-2.kubeconfig", "member-3.kubeconfig", "repo/apps/web.yaml",
		"logs/hub.log", "logs/member-1-agent.log", "logs/member-2-agent.log", "logs/member-3-agent.log"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the demo did not leave %s: %v", f, err)
		}
	}
	// The hub and the agents ran as their own processes, with only their shipped RBAC.
	for _, f := range []string{"hub.log", "member-1-agent.log", "member-2-agent.log", "member-3-agent.log"} {
		b, _ := os.ReadFile(filepath.Join(dir, "logs", f))
		if !bytes.Contains(b, []byte(`"Starting the`)) {
			t.Errorf("logs/%s does not show the binary starting:\n%s", f, b)
		}
		if bytes.Contains(bytes.ToLower(b), []byte("forbidden")) {
			t.Errorf("logs/%s shows a forbidden request:\n%s", f, b)
		}
	}
	text := out.String()
	if strings.Contains(text, "Unpacking objects") {
		t.Errorf("git's progress reached the demo's output:\n%s", text)
	}
	for _, want := range []string{
		"Knative status in the member clusters is simulated by kwok",
		"step 1/3  phase Progressing  canary 20%",
		"step 3/3  phase Completed  canary 0%  cells 3/3/3",
		"the canary completed in every cell",
		"v3 passed its analysis in every cell it reached",
		"the rollout aborted on its analysis: Canary failed: cell-1: analysis failed: metric error-rate = 0.2",
		"kubectl get rollouts.hub.cellsync.io -n shop",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, text)
		}
	}
}

// A demo stopped by a signal, while it starts or once it runs, leaves none of its processes
// behind: not the apiservers, etcd or kwok, not the hub or the agents.
func TestDemoStopsCleanly(t *testing.T) {
	for _, c := range []struct {
		name  string
		sig   syscall.Signal
		after string
	}{
		{"SIGTERM while starting", syscall.SIGTERM, "starting member-2"},
		{"SIGHUP once running", syscall.SIGHUP, "pushing apps/web.yaml"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "demo")
			mark := fmt.Sprintf("CELLSYNC_DEMO_MARK=%d", time.Now().UnixNano())
			cmd := exec.Command("make", "demo", "ARGS=--workdir "+dir)
			cmd.Dir = testenv.RepoRoot()
			cmd.Env = append(os.Environ(), "MAKEFLAGS=", mark)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			out := &syncBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(exited) }()
			defer killMarked(mark)
			deadline := time.Now().Add(5 * time.Minute)
			for !strings.Contains(out.String(), c.after) {
				select {
				case <-exited:
					t.Fatalf("the demo exited before %q:\n%s", c.after, out.String())
				case <-time.After(200 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("the demo never printed %q:\n%s", c.after, out.String())
				}
			}
			if len(marked(mark)) < 3 {
				t.Fatalf("found only %d processes of the demo: the marker does not reach them", len(marked(mark)))
			}
			// The signal a terminal or a service manager sends: to the whole process group.
			if err := syscall.Kill(-cmd.Process.Pid, c.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
			case <-time.After(2 * time.Minute):
				t.Fatalf("the demo did not stop within 2 minutes of %s:\n%s", c.sig, out.String())
			}
			var left []string
			for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(time.Second) {
				if left = marked(mark); len(left) == 0 {
					break
				}
			}
			if len(left) > 0 {
				t.Errorf("%d processes of the demo are left after %s:\n%s\n--- demo output ---\n%s", len(left), c.sig, strings.Join(left, "\n"), out.String())
			}
		})
	}
}

// marked lists the processes (pid and command line) whose environment holds mark.
func marked(mark string) []string {
	var out []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err != nil || !bytes.Contains(env, []byte(mark+"\x00")) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		out = append(out, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(bytes.TrimRight(cmdline, "\x00")), "\x00", " ")))
	}
	return out
}

func killMarked(mark string) {
	for _, p := range marked(mark) {
		if pid, err := strconv.Atoi(strings.Fields(p)[0]); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
