package rollout

import (
	"fmt"
	"sort"
	"strings"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/intake"
)

// summarize fills each cell's part and the counts: a canary from the agents' reports, all at
// once from the app's per-cell summary (which follows the same intake poll).
func (p *planner) summarize() {
	st := &p.st
	if p.strategy.AllAtOnce {
		p.summarizeAll()
	} else {
		p.summarizeCanary()
	}
	st.CellsDisplay = fmt.Sprintf("%d/%d/%d", st.UpdatedCells, st.ReadyCells, st.TotalCells)
	if st.Step > 0 {
		st.StepDisplay = fmt.Sprintf("%d/%d", st.Step, st.Steps)
	}
	if st.Phase == hubv1alpha1.PhaseCompleted {
		st.Step, st.StepDisplay = st.Steps, fmt.Sprintf("%d/%d", st.Steps, st.Steps)
	}
}

func (p *planner) summarizeAll() {
	st := &p.st
	app := p.in.App
	// The counts cover every placed cell; the list is the app's, bounded.
	st.Cells, st.TotalCells, p.index = nil, int32(app.Status.CellCount), nil
	st.UpdatedCells, st.ReadyCells = int32(app.Status.UpdatedCells), int32(app.Status.RolledOutCells)
	for _, c := range app.Status.CellStatuses {
		rc := hubv1alpha1.RolloutCell{Cell: c.Cell, Revision: c.Revision, Message: c.Message}
		rc.Updated = c.DesiredRevision != "" && c.Revision == c.DesiredRevision
		rc.Ready = rc.Updated && c.Ready
		st.Cells = append(st.Cells, rc)
	}
	if st.Phase != hubv1alpha1.PhaseCompleted {
		st.CanaryWeight = 100
	}
}

func (p *planner) summarizeCanary() {
	st := &p.st
	names := make([]string, 0, len(p.in.Placed))
	for _, cell := range p.in.Placed {
		names = append(names, cell.Name)
	}
	placed := p.placedSet()
	// Each cell's own revision, from the app's summary once it has caught up with this revision
	// (until then it names the last one, and would count cells still on it as updated).
	desired := map[string]string{}
	if p.in.App.Status.Revision == p.rev {
		for _, s := range p.in.App.Status.CellStatuses {
			desired[s.Cell] = s.DesiredRevision
		}
	}
	reports := p.in.Reports
	for _, s := range intake.AppCells(p.in.App, names, reports, reports.PolledAt(), p.in.StaleAfter) {
		e := p.cell(s.Cell)
		e.Revision, e.Ready = s.Revision, s.Ready
		if rep, ok := reports.Get(s.Cell); ok {
			e.AppliedCommit = rep.Report.AppliedCommit
		}
		want := desired[s.Cell]
		if want == "" {
			want = p.rev
		}
		e.Updated = s.Revision != "" && s.Revision == want && (e.Canary || st.Phase == hubv1alpha1.PhaseCompleted)
		if !active(st.Phase) {
			e.Message = ""
		}
		if e.Message == "" && !s.Ready {
			e.Message = s.Message
		}
	}
	kept := st.Cells[:0]
	for _, e := range st.Cells {
		if placed[e.Cell] || e.LastKnownGood != "" {
			kept = append(kept, e)
		}
	}
	st.Cells, p.index = kept, nil
	sort.Slice(st.Cells, func(i, j int) bool { return st.Cells[i].Cell < st.Cells[j].Cell })
	st.UpdatedCells, st.ReadyCells, st.TotalCells = 0, 0, int32(len(p.in.Placed))
	for _, e := range st.Cells {
		if !placed[e.Cell] {
			continue
		}
		if e.Updated {
			st.UpdatedCells++
		}
		if e.Ready {
			st.ReadyCells++
		}
	}
}

// Holding is what a cell's branch holds of an app: its revision, plainly or with a traffic
// split (a canary step).
type Holding struct {
	Revision string
	Split    bool
}

// Recover decides, for a canary with no state on this hub, from what the placed branches hold
// (only cells that hold the app appear): no cell has the app, its first deploy (first, straight
// to the last step); every cell runs the app's revision plainly, the last step re-rendered byte
// for byte and judged by its gate (first); every cell that has the app runs one other revision
// plainly, a canary from step 1 as always. Anything else is a canary in flight whose steps and
// last-known-good commits this hub never saw: held says what the branches hold and what to do,
// and nothing is written.
func Recover(holdings map[string]Holding, placed []*hubv1alpha1.Cell, revision, app string) (held string, first bool) {
	cells := map[Holding][]string{}
	for cell, h := range holdings {
		cells[h] = append(cells[h], cell)
	}
	if len(cells) == 0 {
		return "", true
	}
	if len(cells) == 1 {
		for h, in := range cells {
			switch {
			case h.Split:
			case h.Revision == revision && len(in) == len(placed):
				return "", true
			case h.Revision != revision:
				return "", false
			}
		}
	}
	var parts []string
	for h, in := range cells {
		sort.Strings(in)
		what := h.Revision
		if h.Split {
			what += " with a traffic split"
		}
		parts = append(parts, fmt.Sprintf("%s in %s", what, strings.Join(in, ", ")))
	}
	sort.Strings(parts)
	return fmt.Sprintf("This hub has no state for the rollout of %s, and the cell branches hold a canary in flight (%s), likely from a hub that was lost: "+
		"holding, nothing is written. To finish the rollout: kubectl cells promote %s --full; to go back, push the previous spec to the source branch, then promote it with --full",
		revision, strings.Join(parts, "; "), app), false
}
