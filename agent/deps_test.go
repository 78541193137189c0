package agent_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/cellsync/cellsync/test/testenv"
)

// The agent binary links nothing of the hub, and no agent package imports kustomize: nothing is
// rendered at the edge. (kustomize's packages still reach the binary through fluxcd/pkg/ssa →
// fluxcd/cli-utils → k8s.io/cli-runtime; no agent code calls them.)
func TestAgentLinksNoHubAndRendersNothing(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./agent/cmd/agent")
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, " ")
		if strings.HasPrefix(pkg, "github.com/cellsync/cellsync/hub/") {
			t.Errorf("the agent binary links the hub package %s", pkg)
		}
		if !strings.HasPrefix(pkg, "github.com/cellsync/cellsync/") {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if strings.HasPrefix(imp, "sigs.k8s.io/kustomize/") {
				t.Errorf("%s imports %s: the agent must not render", pkg, imp)
			}
		}
	}
}
