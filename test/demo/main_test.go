package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
	for _, f := range []string{"ready", "hub.kubeconfig", "member-1.kubeconfig", "member-2.kubeconfig", "member-3.kubeconfig", "repo/apps/web.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the demo did not leave %s: %v", f, err)
		}
	}
	text := out.String()
	for _, want := range []string{
		"Knative status in the member clusters is simulated by kwok",
		"step 1/3  phase Progressing  canary 20%",
		"step 3/3  phase Completed  canary 0%  cells 3/3/3",
		"the canary completed in every cell",
		"kubectl get rollouts.hub.cellsync.io -n shop",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, text)
		}
	}
}
