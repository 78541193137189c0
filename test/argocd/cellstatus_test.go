package argocd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	hubcontrollers "github.com/cellsync/cellsync/controllers/hub"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/intake"
	"github.com/cellsync/cellsync/test/testenv"
)

// The Cell's status function over the reports a hub sees, with a fake clock: each state gets
// the conditions a user expects, the Argo CD health script reads them as Progressing, Healthy or
// Degraded, and the status is the same whenever it is computed while the state stays.
func TestCellStatus(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "argocd", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	script := string(b)
	const staleAfter = 30 * time.Second
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	report := func(conds ...metav1.Condition) *intake.Entry {
		return &intake.Entry{Commit: "c1", Seen: t0, Report: agentv1alpha1.StatusReport{Cell: "cell-1", HeartbeatTime: metav1.NewTime(t0), Conditions: conds}}
	}
	cond := func(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg}
	}
	tests := []struct {
		name    string
		entry   *intake.Entry
		at      []time.Duration // times after the heartbeat the status is computed at
		reason  string
		ready   metav1.ConditionStatus
		health  string
		message string
	}{
		{"no report yet", nil, []time.Duration{0, time.Hour}, hubv1alpha1.ReasonNoReport, metav1.ConditionFalse, "Progressing", "No report from the cell's agent yet"},
		{"first branch pending", report(
			cond(meta.ReadyCondition, metav1.ConditionFalse, "BranchNotFound", "Branch cells/cell-1 does not exist yet"),
			cond(meta.ReconcilingCondition, metav1.ConditionTrue, meta.ProgressingReason, "Branch cells/cell-1 does not exist yet")),
			[]time.Duration{0, 10 * time.Second, 29 * time.Second}, hubv1alpha1.ReasonAgentProgressing, metav1.ConditionFalse, "Progressing",
			"Agent not ready: Branch cells/cell-1 does not exist yet"},
		{"converging", report(
			cond(meta.ReadyCondition, metav1.ConditionFalse, meta.ProgressingReason, "Applying commit abc"),
			cond(meta.ReconcilingCondition, metav1.ConditionTrue, meta.ProgressingReason, "Applying commit abc")),
			[]time.Duration{time.Second, 20 * time.Second}, hubv1alpha1.ReasonAgentProgressing, metav1.ConditionFalse, "Progressing", "Agent not ready: Applying commit abc"},
		{"ready", report(cond(meta.ReadyCondition, metav1.ConditionTrue, meta.ReconciliationSucceededReason, "Applied abc")),
			[]time.Duration{0, 5 * time.Second, 29 * time.Second}, hubv1alpha1.ReasonAgentReady, metav1.ConditionTrue, "Healthy", "Agent ready"},
		{"failed", report(cond(meta.ReadyCondition, metav1.ConditionFalse, "HealthCheckFailed", "web: RevisionFailed")),
			[]time.Duration{0, 20 * time.Second}, hubv1alpha1.ReasonAgentNotReady, metav1.ConditionFalse, "Degraded", "Agent not ready: web: RevisionFailed"},
		{"stale", report(cond(meta.ReadyCondition, metav1.ConditionTrue, meta.ReconciliationSucceededReason, "Applied abc")),
			[]time.Duration{staleAfter, time.Minute, time.Hour}, hubv1alpha1.ReasonStale, metav1.ConditionFalse, "Degraded",
			"No heartbeat since 2026-12-02T12:00:00Z, more than 30s ago"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var first []metav1.Condition
			for _, after := range tt.at {
				cell := &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: "cell-1", Generation: 1}}
				var e intake.Entry
				if tt.entry != nil {
					e = *tt.entry
				}
				view := intake.View(e, tt.entry != nil, t0.Add(after), staleAfter)
				out := hubcontrollers.CellStatus(cell, view)
				outcome.SetConditions(cell, out)
				cell.Status.ObservedGeneration = 1
				ready := findCondition(cell.Status.Conditions, meta.ReadyCondition)
				if ready == nil || ready.Status != tt.ready || ready.Reason != tt.reason || ready.Message != tt.message {
					t.Fatalf("at +%s: Ready %+v, want %s %s %q", after, ready, tt.ready, tt.reason, tt.message)
				}
				if tt.ready == metav1.ConditionTrue && findCondition(cell.Status.Conditions, meta.ReconcilingCondition) != nil {
					t.Errorf("at +%s: Ready and Reconciling at once", after)
				}
				u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cell)
				if err != nil {
					t.Fatal(err)
				}
				if got, msg := health(t, script, jsonRoundTrip(t, u)); got != tt.health {
					t.Errorf("at +%s: Argo CD health %s (%s), want %s", after, got, msg, tt.health)
				}
				// The same state, computed later, writes the same conditions (times aside).
				conds := stripTimes(cell.Status.Conditions)
				if first == nil {
					first = conds
				} else if !reflect.DeepEqual(first, conds) {
					t.Errorf("at +%s the conditions changed while the state did not:\n%+v\n%+v", after, first, conds)
				}
			}
		})
	}
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

func stripTimes(cs []metav1.Condition) []metav1.Condition {
	out := make([]metav1.Condition, len(cs))
	for i, c := range cs {
		c.LastTransitionTime = metav1.Time{}
		out[i] = c
	}
	return out
}

// jsonRoundTrip is the object as Argo CD reads it: JSON decoded into plain maps.
func jsonRoundTrip(t *testing.T, u map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
