package status

import (
	"fmt"

	"github.com/fluxcd/pkg/runtime/conditions"
	"k8s.io/apimachinery/pkg/util/validation"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/intake"
)

// CellSpec records the cell's branch and checks what the schema cannot: namespace names, and a
// branch no other cell uses (sameBranch are the cells that use the cell's branch, itself
// included).
func CellSpec(cell *hubv1alpha1.Cell, sameBranch []hubv1alpha1.Cell) outcome.Outcome {
	cell.Status.Branch = cell.BranchName()
	for _, ns := range cell.Spec.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return outcome.Outcome{Kind: outcome.Stalled, Reason: hubv1alpha1.ReasonInvalidSpec, Message: fmt.Sprintf("namespace %q is not a valid namespace name", ns)}
		}
	}
	for i := range sameBranch {
		o := &sameBranch[i]
		if o.Name != cell.Name && o.BranchName() == cell.BranchName() {
			return outcome.Outcome{Kind: outcome.Stalled, Reason: hubv1alpha1.ReasonConflict, Message: fmt.Sprintf("cell %q already uses branch %q; give this cell its own spec.branch", o.Name, cell.BranchName())}
		}
	}
	return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonAccepted, Message: fmt.Sprintf("Cell is registered; its manifests go to branch %s", cell.BranchName())}
}

// Cell writes what the agent's report says into the cell's status and returns how the cell
// stands, from a view judged at a given time. A stale cell is never Ready, whatever its last
// report said; an agent still converging makes the cell Reconciling, not failed; messages hold
// no ages, so that nothing changes while the state does not.
func Cell(cell *hubv1alpha1.Cell, v intake.CellView) outcome.Outcome {
	if !v.HasReport {
		conditions.MarkUnknown(cell, hubv1alpha1.StaleCondition, hubv1alpha1.ReasonNoReport, "%s", v.Message)
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonNoReport, Message: v.Message}
	}
	cell.Status.LastAppliedCommit = v.Applied
	if v.Stale {
		conditions.MarkTrue(cell, hubv1alpha1.StaleCondition, hubv1alpha1.ReasonStale, "%s", v.Message)
		return outcome.Outcome{Kind: outcome.Failed, Reason: hubv1alpha1.ReasonStale, Message: v.Message}
	}
	conditions.MarkFalse(cell, hubv1alpha1.StaleCondition, hubv1alpha1.ReasonHeartbeat, "Heartbeat is fresh")
	switch {
	case !v.AgentReady && v.AgentProgressing:
		// Waiting is not failure: the agent is on its way (its first branch, a commit it applies).
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonAgentProgressing, Message: v.Message}
	case !v.AgentReady:
		return outcome.Outcome{Kind: outcome.Failed, Reason: hubv1alpha1.ReasonAgentNotReady, Message: v.Message}
	default:
		return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonAgentReady, Message: v.Message}
	}
}
