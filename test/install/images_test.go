package install

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cellsync/cellsync/test/testenv"
)

// `make images` builds the hub, agent and kubectl-cells images from the tree: each runs as user
// 65532 with its binary as entrypoint, holds no shell, and prints its version.
func TestImages(t *testing.T) {
	if !testenv.HasContainerRuntime() {
		t.Skip("no podman here: .ci/run installs it; the install test runs the binaries as processes instead")
	}
	images(t)
	version := makeVar(t, "VERSION")
	for _, name := range []string{"hub", "agent", "kubectl-cells"} {
		ref := image(t, name)
		out, err := podman(t, "image", "inspect", ref)
		if err != nil {
			t.Fatalf("podman image inspect %s: %v\n%s", ref, err, out)
		}
		var inspected []struct {
			Config struct {
				User       string
				Entrypoint []string
				Labels     map[string]string
			}
		}
		if err := json.Unmarshal([]byte(out), &inspected); err != nil || len(inspected) != 1 {
			t.Fatalf("podman image inspect %s: %v\n%s", ref, err, out)
		}
		cfg := inspected[0].Config
		if cfg.User != "65532:65532" {
			t.Errorf("%s runs as %q, want 65532:65532 (non-root)", ref, cfg.User)
		}
		if want := "/usr/local/bin/" + name; len(cfg.Entrypoint) != 1 || cfg.Entrypoint[0] != want {
			t.Errorf("%s entrypoint %v, want [%s]", ref, cfg.Entrypoint, want)
		}
		if got := cfg.Labels["org.opencontainers.image.version"]; got != version {
			t.Errorf("%s is labelled version %q, want %q", ref, got, version)
		}
		// No shell: running one fails because there is none.
		if out, err := podman(t, "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", ref, "-c", "true"); err == nil {
			t.Errorf("%s runs /bin/sh; the image must hold no shell:\n%s", ref, out)
		}
		out, err = podman(t, "run", "--rm", "--network", "none", "--read-only", ref, "--version")
		if err != nil {
			t.Fatalf("%s --version: %v\n%s", ref, err, out)
		}
		line := strings.TrimSpace(out)
		if !strings.HasPrefix(line, name+" "+version+" (commit ") || !strings.Contains(line, ", go1.") {
			t.Errorf("%s --version printed %q, want %q with the commit and the Go version", ref, line, name+" "+version)
		}
		if strings.Contains(line, "commit unknown") {
			t.Errorf("%s --version has no commit: %q", ref, line)
		}
	}
}
