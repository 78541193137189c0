// Package argocd checks the Argo CD health script in config/argocd against the statuses cellsync
// controllers write, with gopher-lua, the Lua interpreter Argo CD runs health checks in.
package argocd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"

	"github.com/cellsync/cellsync/test/testenv"
)

func health(t *testing.T, script string, obj map[string]any) (string, string) {
	t.Helper()
	state := lua.NewState()
	defer state.Close()
	state.SetGlobal("obj", toLua(state, obj))
	if err := state.DoString(script); err != nil {
		t.Fatalf("health.lua failed: %v", err)
	}
	ret, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("health.lua returned %s, not a table", state.Get(-1).Type())
	}
	return ret.RawGetString("status").String(), ret.RawGetString("message").String()
}

func toLua(state *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case map[string]any:
		tbl := state.NewTable()
		for k, e := range x {
			tbl.RawSetString(k, toLua(state, e))
		}
		return tbl
	case []any:
		tbl := state.NewTable()
		for _, e := range x {
			tbl.Append(toLua(state, e))
		}
		return tbl
	case string:
		return lua.LString(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case bool:
		return lua.LBool(x)
	}
	return lua.LNil
}

func obj(t *testing.T, y string) map[string]any {
	t.Helper()
	m := map[string]any{}
	if err := yaml.Unmarshal([]byte(y), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestHealthScript(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "argocd", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	script := string(b)
	tests := []struct {
		name, obj, status string
	}{
		{"no status yet", "metadata: {generation: 1}", "Progressing"},
		{"old generation", "metadata: {generation: 2}\nstatus: {observedGeneration: 1, conditions: [{type: Ready, status: 'True', reason: Rendered, message: ok}]}", "Progressing"},
		{"ready", "metadata: {generation: 1}\nstatus: {observedGeneration: 1, conditions: [{type: Ready, status: 'True', reason: ReconciliationSucceeded, message: applied}]}", "Healthy"},
		{"stalled", "metadata: {generation: 1}\nstatus: {observedGeneration: 1, conditions: [{type: Ready, status: 'False', reason: PolicyViolation, message: no}, {type: Stalled, status: 'True', reason: PolicyViolation, message: no}]}", "Degraded"},
		{"retrying", "metadata: {generation: 1}\nstatus: {conditions: [{type: Ready, status: 'False', reason: GitUnavailable, message: down}, {type: Reconciling, status: 'True', reason: ProgressingWithRetry, message: down}]}", "Progressing"},
		{"health check failed", "metadata: {generation: 1}\nstatus: {observedGeneration: 1, conditions: [{type: Ready, status: 'False', reason: HealthCheckFailed, message: RevisionFailed}]}", "Degraded"},
		{"stale cell", "metadata: {generation: 1}\nstatus: {observedGeneration: 1, conditions: [{type: Ready, status: 'False', reason: Stale, message: old}, {type: Stale, status: 'True', reason: Stale, message: old}]}", "Degraded"},
		{"cell awaiting its first report", "metadata: {generation: 1}\nstatus: {observedGeneration: 1, conditions: [{type: Ready, status: 'False', reason: NoReport, message: none}, {type: Reconciling, status: 'True', reason: Progressing, message: none}]}", "Progressing"},
		{"paused rollout", "kind: Rollout\nmetadata: {generation: 1}\nstatus: {observedGeneration: 1, phase: Paused, message: waiting for approval, conditions: [{type: Ready, status: 'False', reason: AwaitingApproval, message: w}, {type: Reconciling, status: 'True', reason: Progressing, message: w}]}", "Suspended"},
		{"aborted rollout", "kind: Rollout\nmetadata: {generation: 1}\nstatus: {observedGeneration: 1, phase: Aborted, conditions: [{type: Ready, status: 'False', reason: Aborted, message: canary failed}]}", "Degraded"},
		{"refused rollout step", "kind: RolloutStep\nmetadata: {generation: 1}\nstatus: {phase: Refused, conditions: [{type: Ready, status: 'False', reason: InvalidStep, message: no}, {type: Stalled, status: 'True', reason: InvalidStep, message: no}]}", "Degraded"},
		{"suspended", "metadata: {generation: 1}\nstatus: {observedGeneration: 1, conditions: [{type: Ready, status: 'False', reason: Suspended, message: s}]}", "Suspended"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, msg := health(t, script, obj(t, tt.obj)); got != tt.status {
				t.Fatalf("status %s (%s), want %s", got, msg, tt.status)
			}
		})
	}

	// The ConfigMap patch carries the same script for every kind.
	patch, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "argocd", "argocd-cm-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cm := struct {
		Data map[string]string `json:"data"`
	}{}
	if err := yaml.Unmarshal(patch, &cm); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"hub.cellsync.io_Cell", "hub.cellsync.io_CellPlacement", "hub.cellsync.io_ServerlessApp", "hub.cellsync.io_Rollout", "hub.cellsync.io_RolloutStep", "hub.cellsync.io_AppSource", "agent.cellsync.io_CellSync"} {
		got := cm.Data["resource.customizations.health."+kind]
		if strings.TrimSpace(got) != strings.TrimSpace(script) {
			t.Errorf("argocd-cm-patch.yaml has a different script for %s; regenerate it from health.lua", kind)
		}
	}
}
