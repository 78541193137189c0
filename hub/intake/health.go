package intake

import (
	"fmt"
	"strings"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// CellView is what the hub concludes about a cell from its last report.
type CellView struct {
	// HasReport is false until the cell's agent reported once.
	HasReport bool
	// Stale is true when the last heartbeat is older than the threshold.
	Stale bool
	// AgentReady is the agent's own Ready condition.
	AgentReady bool
	// AgentProgressing is true when the agent is not ready because it is still on its way
	// (its Reconciling condition is True): waiting, not failing.
	AgentProgressing bool
	// Seen is when the hub first read the latest heartbeat, on its own clock.
	Seen    time.Time
	Applied string
	Message string
}

// View judges a cell's report at the time of a poll, on the hub's clock: a cell is stale when
// the hub has seen no newer heartbeat for staleAfter, and a stale cell never counts as ready.
// The agent's own clock is never compared with the hub's. Its messages hold no ages, so that
// they stay the same while the state does.
func View(e Entry, ok bool, at time.Time, staleAfter time.Duration) CellView {
	if !ok {
		return CellView{Message: "No report from the cell's agent yet"}
	}
	v := CellView{HasReport: true, Seen: e.Seen, Applied: e.Report.AppliedCommit}
	if at.Sub(e.Seen) >= staleAfter {
		v.Stale = true
		v.Message = fmt.Sprintf("No heartbeat since %s, more than %s ago", e.Seen.UTC().Format(time.RFC3339), staleAfter)
		return v
	}
	ready := apimeta.FindStatusCondition(e.Report.Conditions, meta.ReadyCondition)
	switch {
	case ready == nil:
		v.Message = "The agent reports no Ready condition"
	case ready.Status == metav1.ConditionTrue:
		v.AgentReady = true
		v.Message = "Agent ready"
	default:
		v.AgentProgressing = apimeta.IsStatusConditionTrue(e.Report.Conditions, meta.ReconcilingCondition)
		v.Message = fmt.Sprintf("Agent not ready: %s", ready.Message)
	}
	return v
}

// AppCells summarizes one app over its cells from their reports, judged at a poll's time.
func AppCells(app *hubv1alpha1.ServerlessApp, cells []string, reports *Reports, at time.Time, staleAfter time.Duration) []hubv1alpha1.CellAppStatus {
	out := make([]hubv1alpha1.CellAppStatus, 0, len(cells))
	for _, cell := range cells {
		e, ok := reports.Get(cell)
		v := View(e, ok, at, staleAfter)
		s := hubv1alpha1.CellAppStatus{Cell: cell}
		switch {
		case !v.HasReport:
			s.Message = v.Message
		case v.Stale:
			s.Stale, s.Message = true, v.Message
		default:
			s.Message = "Not applied in the cell yet"
			for _, a := range e.Report.Apps {
				if a.App == app.Name && a.AppNamespace == app.Namespace {
					s.Ready, s.Failed, s.Revision, s.Message, s.Traffic = a.Ready, a.Failed && !a.Ready, a.LatestReadyRevision, a.Message, trafficString(a.Traffic)
					if a.Ready {
						s.Message = ""
					}
					break
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// trafficString renders a reported traffic split as "rev=90,rev2=10 (canary)".
func trafficString(ts []agentv1alpha1.TrafficReport) string {
	parts := make([]string, 0, len(ts))
	for _, t := range ts {
		p := fmt.Sprintf("%s=%d", t.RevisionName, t.Percent)
		if t.Tag != "" {
			p += " (" + t.Tag + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ",")
}
