package intake

import (
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

func TestView(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	report := func(age time.Duration, ready metav1.ConditionStatus) Entry {
		return Entry{Commit: "c", Seen: now.Add(-age), Report: agentv1alpha1.StatusReport{
			HeartbeatTime: metav1.NewTime(now.Add(-age)), AppliedCommit: "abc",
			Conditions: []metav1.Condition{{Type: meta.ReadyCondition, Status: ready, Message: "m"}},
			Apps:       []agentv1alpha1.AppReport{{App: "web", AppNamespace: "team", Ready: true, LatestReadyRevision: "web-1"}},
		}}
	}
	tests := []struct {
		name                       string
		entry                      Entry
		ok                         bool
		hasReport, stale, agentRdy bool
	}{
		{name: "no report", ok: false},
		{name: "fresh and ready", entry: report(10*time.Second, metav1.ConditionTrue), ok: true, hasReport: true, agentRdy: true},
		{name: "fresh, agent not ready", entry: report(10*time.Second, metav1.ConditionFalse), ok: true, hasReport: true},
		{name: "stale although it said ready", entry: report(3*time.Minute, metav1.ConditionTrue), ok: true, hasReport: true, stale: true},
		{name: "exactly at the threshold is stale", entry: report(2*time.Minute, metav1.ConditionTrue), ok: true, hasReport: true, stale: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := View(tt.entry, tt.ok, now, 2*time.Minute)
			if v.HasReport != tt.hasReport || v.Stale != tt.stale || v.AgentReady != tt.agentRdy {
				t.Fatalf("view = %+v", v)
			}
			if v.Message == "" {
				t.Fatal("every view explains itself")
			}
		})
	}

	reports := NewReports()
	reports.Put("fresh", report(10*time.Second, metav1.ConditionTrue))
	reports.Put("old", report(time.Hour, metav1.ConditionTrue))
	app := &hubv1alpha1.ServerlessApp{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team"}}
	got := AppCells(app, []string{"fresh", "old", "silent"}, reports, now, 2*time.Minute)
	if !got[0].Ready || got[0].Revision != "web-1" || got[1].Ready || got[2].Ready {
		t.Fatalf("summary = %+v", got)
	}
}
