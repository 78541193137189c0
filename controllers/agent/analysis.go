package agent

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/cellsync/cellsync/agent/analysis"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
)

// analysisWake is the shortest wait before measuring again, so that a run of due measurements
// never becomes a busy loop.
const analysisWake = time.Second

// analyze measures the analyses of the applied commit for the apps that run Ready in the cell
// (an analysis starts once its app is Ready), within analysis.Budget, and returns when the next
// measurement is due (zero when none is).
func (r *CellSyncReconciler) analyze(ctx context.Context, cs *agentv1alpha1.CellSync, st *syncState) time.Time {
	ready := map[string]bool{}
	notReady := map[string]bool{}
	for _, h := range st.health {
		key := h.AppNamespace + "/" + h.App
		if h.Ready {
			ready[key] = true
		} else {
			notReady[key] = true
		}
	}
	keep := map[string]*analysis.Run{}
	for _, a := range st.analyses {
		key := a.ID + "@" + st.applied
		if run, ok := st.runs[key]; ok {
			keep[key] = run
			continue
		}
		app := a.AppNamespace + "/" + a.App
		if ready[app] && !notReady[app] {
			keep[key] = analysis.New(a, st.applied, r.now())
		}
	}
	st.runs = keep
	meas := &analysis.Cell{}
	if cs.Spec.Analysis != nil && cs.Spec.Analysis.Prometheus != nil {
		meas.Address = cs.Spec.Analysis.Prometheus.Address
	}
	var next time.Time
	deadline := r.now().Add(analysis.Budget)
	for _, key := range slices.Sorted(maps.Keys(keep)) {
		left := deadline.Sub(r.now())
		if left <= 0 {
			// Out of time this wake-up: the rest is due at once on the next.
			return r.now()
		}
		if due := keep[key].Measure(ctx, r.now, meas, left); !due.IsZero() && (next.IsZero() || due.Before(next)) {
			next = due
		}
	}
	return next
}

// analysisReports are the runs' reports, ordered by ID.
func (st *syncState) analysisReports() []agentv1alpha1.AnalysisReport {
	var out []agentv1alpha1.AnalysisReport
	for _, key := range slices.Sorted(maps.Keys(st.runs)) {
		out = append(out, st.runs[key].Report())
	}
	return out
}
