package status

import (
	"fmt"
	"strings"

	"github.com/fluxcd/pkg/apis/meta"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/placement"
)

// App writes the per-cell summary (each cell's view of the app, judged at one intake poll)
// into the app's status and says how the app stands. Ready means ready in every placed cell;
// converging cells keep it Reconciling; a cell that reports the app failed, or a stale cell
// whose word may be old, makes it Degraded and is named. Messages count states, never work
// done or ages, so they do not change while the state does not.
func App(app *hubv1alpha1.ServerlessApp, res *placement.Result, cells []hubv1alpha1.CellAppStatus) outcome.Outcome {
	var failed, stale []string
	app.Status.ReadyCells, app.Status.UpdatedCells, app.Status.RolledOutCells = 0, 0, 0
	for _, c := range cells {
		if c.DesiredRevision != "" && c.Revision == c.DesiredRevision {
			app.Status.UpdatedCells++
			if c.Ready {
				app.Status.RolledOutCells++
			}
		}
		switch {
		case c.Ready:
			app.Status.ReadyCells++
		case c.Failed:
			failed = append(failed, c.Cell)
		case c.Stale:
			stale = append(stale, c.Cell)
		}
	}
	if len(cells) > hubv1alpha1.MaxStatusCells {
		cells = cells[:hubv1alpha1.MaxStatusCells]
	}
	app.Status.CellStatuses = cells
	if len(res.Cells) == 0 {
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonNoCells, Message: "The placement resolves no cells yet"}
	}
	msg := fmt.Sprintf("Revision %s rendered to %d cells, ready in %d", app.Status.Revision, len(res.Cells), app.Status.ReadyCells)
	if app.IsCanary() {
		msg = fmt.Sprintf("Revision %s validated for %d cells, ready in %d; the canary Rollout %s writes it step by step (kubectl get rollouts.hub.cellsync.io %s -n %s)",
			app.Status.Revision, len(res.Cells), app.Status.ReadyCells, app.Name, app.Name, app.Namespace)
	}
	if len(res.Missing) > 0 {
		msg += fmt.Sprintf("; placement names missing cells: %s", strings.Join(res.Missing, ", "))
	}
	switch {
	case len(failed) > 0:
		return outcome.Outcome{Kind: outcome.Failed, Reason: hubv1alpha1.ReasonAppFailed, Message: msg + "; failed in " + names(failed)}
	case len(stale) > 0:
		return outcome.Outcome{Kind: outcome.Failed, Reason: hubv1alpha1.ReasonStale, Message: msg + "; no fresh heartbeat from " + names(stale)}
	case app.Status.ReadyCells < len(res.Cells):
		// On its way: Reconciling (Progressing in Argo CD), never Ready with a message that
		// says otherwise.
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonWaitingForCells, Message: msg}
	default:
		return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonRendered, Message: msg}
	}
}

// names lists cells for a message, at most ten of them.
func names(cells []string) string {
	const most = 10
	if len(cells) > most {
		return fmt.Sprintf("%s and %d more", strings.Join(cells[:most], ", "), len(cells)-most)
	}
	return strings.Join(cells, ", ")
}

// writeTroubles are the reasons a Rollout cannot write its app's cell branches.
var writeTroubles = map[string]bool{
	hubv1alpha1.ReasonGitAuthFailed: true, hubv1alpha1.ReasonGitPushFailed: true, hubv1alpha1.ReasonGitUnavailable: true,
	hubv1alpha1.ReasonConflict: true, hubv1alpha1.ReasonLimitExceeded: true,
}

// WriteTrouble is the trouble a Rollout's conditions report with writing its app's cell
// branches, as the app's outcome: Stalled when the Rollout is, retrying otherwise.
func WriteTrouble(conds []metav1.Condition) (outcome.Outcome, bool) {
	ready := apimeta.FindStatusCondition(conds, meta.ReadyCondition)
	if ready == nil || ready.Status != metav1.ConditionFalse || !writeTroubles[ready.Reason] {
		return outcome.Outcome{}, false
	}
	kind := outcome.Retrying
	if apimeta.IsStatusConditionTrue(conds, meta.StalledCondition) {
		kind = outcome.Stalled
	}
	return outcome.Outcome{Kind: kind, Reason: ready.Reason, Message: "The app's Rollout cannot write its cell branches: " + ready.Message}, true
}
