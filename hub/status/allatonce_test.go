package status

import (
	"testing"
	"time"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

func TestAllAtOnceStatus(t *testing.T) {
	app := func(rev string, cells ...hubv1alpha1.CellAppStatus) *hubv1alpha1.ServerlessApp {
		a := &hubv1alpha1.ServerlessApp{}
		a.Status.Revision, a.Status.CellCount, a.Status.CellStatuses = rev, len(cells), cells
		return a
	}
	cell := func(name, desired, reported string, ready bool) hubv1alpha1.CellAppStatus {
		return hubv1alpha1.CellAppStatus{Cell: name, DesiredRevision: desired, Revision: reported, Ready: ready}
	}
	tests := []struct {
		name         string
		prev         hubv1alpha1.RolloutStatus
		app          *hubv1alpha1.ServerlessApp
		phase        hubv1alpha1.RolloutPhase
		cells        string
		stable       string
		canary       string
		canaryWeight int32
	}{
		{"first revision rolling out", hubv1alpha1.RolloutStatus{}, app("web-2", cell("a", "web-2", "web-2", true), cell("b", "web-2", "", false)),
			hubv1alpha1.PhaseProgressing, "1/1/2", "", "web-2", 100},
		{"all cells ready", hubv1alpha1.RolloutStatus{StableRevision: "web-1"}, app("web-2", cell("a", "web-2", "web-2", true), cell("b", "web-2", "web-2", true)),
			hubv1alpha1.PhaseCompleted, "2/2/2", "web-2", "", 0},
		{"updated but not ready", hubv1alpha1.RolloutStatus{StableRevision: "web-1"}, app("web-2", cell("a", "web-2", "web-2", false)),
			hubv1alpha1.PhaseProgressing, "1/0/1", "web-1", "web-2", 100},
		{"old revision still running", hubv1alpha1.RolloutStatus{StableRevision: "web-1"}, app("web-2", cell("a", "web-2", "web-1", true)),
			hubv1alpha1.PhaseProgressing, "0/0/1", "web-1", "web-2", 100},
		{"completed stays completed when a cell goes stale", hubv1alpha1.RolloutStatus{StableRevision: "web-2"}, app("web-2", cell("a", "web-2", "", false)),
			hubv1alpha1.PhaseCompleted, "0/0/1", "web-2", "", 0},
		{"per-cell revisions from overrides", hubv1alpha1.RolloutStatus{}, app("web-2", cell("a", "web-2", "web-2", true), cell("b", "web-9", "web-9", true)),
			hubv1alpha1.PhaseCompleted, "2/2/2", "web-2", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := AllAtOnce(tt.prev, tt.app, time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
			if st.Phase != tt.phase || st.CellsDisplay != tt.cells || st.StableRevision != tt.stable || st.CanaryRevision != tt.canary || st.CanaryWeight != tt.canaryWeight || st.StepDisplay != "1/1" {
				t.Fatalf("status = %+v", st)
			}
		})
	}
}
