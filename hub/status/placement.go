package status

import (
	"fmt"
	"strings"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/placement"
)

// Placement writes the resolved cells into the placement's status and says whether the
// resolution is complete; overrides that cannot apply to a resolved cell stall it.
func Placement(pl *hubv1alpha1.CellPlacement, res *placement.Result) outcome.Outcome {
	pl.Status.CellCount = len(res.Cells)
	pl.Status.ResolvedCells = BoundedNames(res.Names())
	for _, c := range res.Cells {
		if _, err := placement.OverridesFor(pl, c); err != nil {
			return Classify(err).Outcome
		}
	}
	if len(res.Missing) > 0 {
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonNoCells, Message: fmt.Sprintf("Resolved %d cells; named cells not found: %s", len(res.Cells), strings.Join(res.Missing, ", "))}
	}
	msg := fmt.Sprintf("Resolved %d cells", len(res.Cells))
	if len(res.Cells) > hubv1alpha1.MaxStatusCells {
		msg += fmt.Sprintf(" (status lists the first %d)", hubv1alpha1.MaxStatusCells)
	}
	return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonResolved, Message: msg}
}

// BoundedNames keeps a status list short; a count field beside it says how many there are.
func BoundedNames(names []string) []string {
	if len(names) > hubv1alpha1.MaxStatusCells {
		return append([]string(nil), names[:hubv1alpha1.MaxStatusCells]...)
	}
	return names
}
