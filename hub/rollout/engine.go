package rollout

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/intake"
	"github.com/cellsync/cellsync/hub/render"
)

// LastKnownGoodNone is the last-known-good of a branch that did not exist: going back removes
// the app.
const LastKnownGoodNone = "none"

// Request is a RolloutStep waiting to be taken, in creation order.
type Request struct {
	Name string
	Spec hubv1alpha1.RolloutStepSpec
}

// Input is everything a decision rests on: the app, where it is placed, the RolloutSteps
// waiting, the cells' reports and the time.
type Input struct {
	App    *hubv1alpha1.ServerlessApp
	Placed []*hubv1alpha1.Cell
	// Pending are the RolloutSteps not acted on yet, in creation order.
	Pending []Request
	// Holdings is what each placed cell's branch holds of the app, by cell; read only when
	// NeedsHoldings says so.
	Holdings map[string]Holding
	Reports  *intake.Reports
	// StaleAfter is how old a heartbeat may be before the cell is stale.
	StaleAfter time.Duration
	Now        time.Time
	// Poll is how often a waiting step is judged again without an event.
	Poll time.Duration
	// Reapply says the current step's render is due again (after a restart, or because a branch
	// head may have moved for another app).
	Reapply bool
}

// Write is the Git write a plan asks for.
type Write int

const (
	// NoWrite: nothing to write.
	NoWrite Write = iota
	// WriteCells: make the branches of the cells the rollout holds match its cell table: canary
	// cells get the canary revision at their weight, cells put back get their last-known-good
	// tree, and no other branch is visited. Its result is folded in with Recorded.
	WriteCells
	// WriteAll: the app rendered plainly into every placed cell (an all-at-once rollout, or a
	// completed canary kept rendered).
	WriteAll
)

// StepUpdate is the outcome a RolloutStep records.
type StepUpdate struct {
	Name   string
	Phase  hubv1alpha1.RolloutStepPhase
	Reason string
	// Message is what the step, and an event on it, say.
	Message string
	// StepIndex, when not zero, is the strategy step the RolloutStep moved the rollout to.
	StepIndex int32
	// IfApplied records the outcome only when the step is still Applied: it moved the rollout to
	// its current step and this is how that step ended.
	IfApplied bool
}

// NewStep is a RolloutStep the hub creates to advance an automatic step. Its name is fixed by
// the revision, the app's generation and the step, so a repeated decision cannot create two.
type NewStep struct {
	Name string
	Spec hubv1alpha1.RolloutStepSpec
}

// Event is an event on the Rollout.
type Event struct {
	Type, Reason, Message string
}

// Plan is the next state of a rollout and what must happen for it to hold. The executor carries
// the actions out in this order: the app's template (an undo), the Git write (recorded into the
// status with Recorded), then the RolloutSteps and the events. A failed write drops the plan:
// the status stays as it was and the steps stay pending.
type Plan struct {
	Status hubv1alpha1.RolloutStatus
	// App is the app the write renders: the input's, or a copy whose template an undo set back.
	App *hubv1alpha1.ServerlessApp
	// SetTemplate, when set, is an undo's target: the app's template is set back to it first.
	SetTemplate *hubv1alpha1.RevisionRecord
	// Undone is the undo's RolloutStep outcome, recorded as soon as the template is set back.
	Undone *StepUpdate
	Write  Write
	// Again says the rollout moved: decide again once the write is recorded, to judge the step.
	Again  bool
	Steps  []StepUpdate
	Create []NewStep
	Events []Event
	// Err is input a person must fix (a *Error), or a render that cannot be done; nothing is
	// written.
	Err     error
	Outcome outcome.Outcome
	// RecheckAfter is when to decide again without an event; 0 means only on an event.
	RecheckAfter time.Duration
	// Resync asks to decide again at the hub's resync.
	Resync bool
	// Held says why the rollout holds without writing: this hub has no state for a canary the
	// branches hold in flight.
	Held string
}

// Decide is the rollout engine: from the rollout's last status and the facts, the next status
// and the actions that make it true. It reads no cluster, no Git and no clock.
func Decide(prev hubv1alpha1.RolloutStatus, in Input) Plan {
	p := &planner{in: in, st: *prev.DeepCopy(), strategy: StrategyOf(in.App)}
	p.plan.App = in.App
	p.rev = render.AppRevision(in.App)
	p.run()
	p.plan.Status = p.st
	return p.plan
}

// planner is one decision in the making.
type planner struct {
	in       Input
	st       hubv1alpha1.RolloutStatus
	strategy Strategy
	rev      string
	plan     Plan
	// index finds a cell in st.Cells by name; nil until first used, dropped when the list is
	// reordered.
	index map[string]int
}

func (p *planner) run() {
	st := &p.st
	st.Steps = int32(len(p.strategy.Steps))
	pending := p.in.Pending
	if p.strategy.AllAtOnce {
		for _, r := range pending {
			p.refuse(r, hubv1alpha1.ReasonInvalidStep, fmt.Sprintf("ServerlessApp %s rolls out all at once (spec.strategy.type AllAtOnce); RolloutSteps move canary rollouts only", p.in.App.Name))
		}
		pending = nil
	}
	if len(p.in.Placed) == 0 {
		p.summarize()
		p.plan.Outcome = outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonNoCells, Message: "The placement resolves no cells yet"}
		return
	}
	p.forgetUnplaced()
	if err := Validate(p.strategy.Steps, p.in.Placed); err != nil {
		p.fail(err)
		return
	}
	if p.needsStart() && !p.start() {
		return
	}
	for _, r := range pending {
		if !p.take(r) {
			return
		}
	}
	switch {
	case p.plan.Held != "" && st.Step == 0:
		p.plan.Outcome = AtRest(*st, p.plan.Held)
		p.plan.RecheckAfter = p.in.Poll
	case p.plan.Write != NoWrite || p.plan.SetTemplate != nil:
		// The rollout moved: it is judged once the write is recorded.
		p.plan.Again = true
		p.plan.Outcome = outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonProgressing, Message: st.Message}
	default:
		p.progress()
	}
	p.summarize()
}

// fail drops everything decided so far: nothing is written and the status stays as it was.
func (p *planner) fail(err error) {
	p.plan = Plan{App: p.in.App, Err: err}
}

// forgetUnplaced drops the rollout's hold on cells the placement no longer selects: the app is
// taken out of them, and an abort must not put it back.
func (p *planner) forgetUnplaced() {
	placed := p.placedSet()
	for i := range p.st.Cells {
		e := &p.st.Cells[i]
		if !placed[e.Cell] {
			e.Canary, e.Weight, e.LastKnownGood, e.StableRevision, e.ExpectedCommit, e.ExpectedSince = false, 0, "", "", "", nil
		}
	}
}

func (p *planner) placedSet() map[string]bool {
	out := make(map[string]bool, len(p.in.Placed))
	for _, c := range p.in.Placed {
		out[c.Name] = true
	}
	return out
}

// active is true while a rollout walks its steps (paused included).
func active(ph hubv1alpha1.RolloutPhase) bool {
	return ph == hubv1alpha1.PhaseProgressing || ph == hubv1alpha1.PhasePaused
}

// needsStart says whether the app's revision is new to the rollout.
func (p *planner) needsStart() bool {
	st := &p.st
	switch {
	case active(st.Phase):
		return st.CanaryRevision != p.rev || (!p.strategy.AllAtOnce && len(p.canaryCells()) == 0)
	case st.Phase == hubv1alpha1.PhaseAborted:
		return st.CanaryRevision != p.rev
	default:
		return st.StableRevision != p.rev
	}
}

// NeedsHoldings says whether a decision needs to know what the placed branches hold: a canary
// whose revision is new and that has no state at all (a new Rollout, or a hub rebuilt on an
// empty etcd).
func NeedsHoldings(prev hubv1alpha1.RolloutStatus, app *hubv1alpha1.ServerlessApp) bool {
	p := &planner{st: prev, strategy: StrategyOf(app), rev: render.AppRevision(app)}
	return !p.strategy.AllAtOnce && p.needsStart() && prev.StableRevision == "" && !p.anyTouched()
}

// start begins a rollout of the app's revision at step 1. A first deploy (no revision ever
// completed and nothing touched) goes straight to the last step: there is nothing to compare a
// canary with. A rollout still in progress is superseded: its touched cells keep their
// last-known-good commits, and those outside the new first step go back to them.
func (p *planner) start() bool {
	st := &p.st
	first := st.StableRevision == "" && !p.anyTouched()
	if first && !p.strategy.AllAtOnce {
		held, isFirst := Recover(p.in.Holdings, p.in.Placed, p.rev, p.in.App.Name)
		if held != "" {
			p.plan.Held = held
			st.CanaryRevision, st.Paused, st.Step = p.rev, true, 0
			p.to(hubv1alpha1.PhasePaused, held)
			return true
		}
		first = isFirst
	}
	if active(st.Phase) && st.CanaryRevision != "" && st.CanaryRevision != p.rev {
		st.SupersededRevision = st.CanaryRevision
		p.event(corev1.EventTypeNormal, hubv1alpha1.ReasonSuperseded, fmt.Sprintf("Revision %s supersedes %s at step %d/%d; cells that ran %s go back to their stable revision unless the new first step covers them",
			p.rev, st.CanaryRevision, st.Step, st.Steps, st.CanaryRevision))
		p.markCurrent(hubv1alpha1.StepSuperseded, hubv1alpha1.ReasonSuperseded, fmt.Sprintf("Superseded by revision %s", p.rev))
	}
	for i := range st.Cells {
		e := &st.Cells[i]
		e.Canary, e.Weight, e.ExpectedCommit, e.ExpectedSince, e.Analysis = false, 0, "", nil, nil
	}
	st.CanaryRevision, st.Step, st.Analysis, st.AnalysisAttempt = p.rev, 0, "", 0
	p.to(hubv1alpha1.PhaseProgressing, "")
	target := int32(1)
	if first {
		target = int32(len(p.strategy.Steps))
	}
	mask, weight, err := p.stepMask(target, nil, nil)
	if err != nil {
		p.fail(err)
		return false
	}
	p.moveTo(target, mask, weight, "")
	return true
}

// moveTo makes target the current step; the write renders it.
func (p *planner) moveTo(target int32, mask []string, weight int32, stepName string) {
	st := &p.st
	if st.CurrentStep != "" && st.StepCompletedAt == nil && st.CurrentStep != stepName {
		p.plan.Steps = append(p.plan.Steps, StepUpdate{Name: st.CurrentStep, Phase: hubv1alpha1.StepSuperseded, Reason: hubv1alpha1.ReasonSuperseded,
			Message: fmt.Sprintf("Replaced by step %d/%d before it completed", target, len(p.strategy.Steps)), IfApplied: true})
	}
	if !p.strategy.AllAtOnce {
		for _, n := range mask {
			e := p.cell(n)
			e.Canary, e.Weight = true, weight
		}
	}
	st.Step, st.CanaryWeight, st.StepCompletedAt, st.Paused, st.CurrentStep, st.SkippedCells = target, weight, nil, false, stepName, nil
	p.to(hubv1alpha1.PhaseProgressing, fmt.Sprintf("Step %d/%d: %s at %d%% in %d cells, waiting for them to apply it", target, len(p.strategy.Steps), p.rev, weight, len(mask)))
	p.plan.Write = p.writeKind()
}

// writeKind is how this strategy writes a step: all at once renders every placed cell plainly;
// a canary writes the cells it holds, keeping their last-known-good commits.
func (p *planner) writeKind() Write {
	if p.strategy.AllAtOnce {
		return WriteAll
	}
	return WriteCells
}

// stepMask is the cells and weight of a strategy step, with a RolloutStep's overrides. The mask
// must stay inside the placement and keep every cell the rollout already updated, and the last
// step must cover every cell at 100 %.
func (p *planner) stepMask(target int32, cells *hubv1alpha1.StepCells, weight *int32) ([]string, int32, error) {
	step := p.strategy.Steps[target-1]
	sel, w := step.Cells, step.Weight
	if cells != nil {
		sel = Selection(*cells)
	}
	if weight != nil {
		w = *weight
	}
	if w < 0 || w > 100 {
		return nil, 0, fail("traffic weight %d is not between 0 and 100", w)
	}
	mask, err := Mask(sel, p.in.Placed)
	if err != nil {
		return nil, 0, err
	}
	if len(mask) == 0 {
		return nil, 0, fail("the step selects no cells")
	}
	in := map[string]bool{}
	for _, n := range mask {
		in[n] = true
	}
	for _, n := range p.canaryCells() {
		if !in[n] {
			return nil, 0, fail("the step drops cell %s, which already runs the canary; masks may only grow", n)
		}
	}
	if int(target) == len(p.strategy.Steps) && (len(mask) != len(p.in.Placed) || w != 100) {
		return nil, 0, fail("the last step must send 100%% of the traffic in every placed cell (this one has %d%% in %d of %d cells)", w, len(mask), len(p.in.Placed))
	}
	return mask, w, nil
}

// abort puts every touched cell back at its last-known-good tree.
func (p *planner) abort(reason string) {
	st := &p.st
	for i := range st.Cells {
		st.Cells[i].Canary = false
	}
	p.plan.Write = WriteCells
	p.markCurrent(hubv1alpha1.StepSuperseded, hubv1alpha1.ReasonAborted, reason)
	st.CanaryWeight, st.Paused, st.StepCompletedAt = 0, false, nil
	p.to(hubv1alpha1.PhaseAborted, reason)
	p.event(corev1.EventTypeWarning, hubv1alpha1.ReasonAborted, fmt.Sprintf("Rollout of %s aborted: %s; every touched cell is back at its last-known-good commit", p.rev, reason))
}

// complete records the revision as stable.
func (p *planner) complete() {
	st := &p.st
	st.History = AppendHistory(st.History, p.rev, p.in.App, p.in.Now)
	msg := fmt.Sprintf("Revision %s runs in every placed cell", p.rev)
	if len(st.SkippedCells) > 0 {
		msg += "; skipped stale cells: " + some(st.SkippedCells, ", ")
	}
	st.StableRevision, st.CanaryRevision, st.CanaryWeight, st.SupersededRevision, st.Paused = p.rev, "", 0, "", false
	p.to(hubv1alpha1.PhaseCompleted, msg)
	for i := range st.Cells {
		e := &st.Cells[i]
		e.Canary, e.Weight, e.LastKnownGood, e.StableRevision, e.ExpectedCommit, e.ExpectedSince, e.Analysis = false, 0, "", "", "", nil, nil
	}
	p.event(corev1.EventTypeNormal, hubv1alpha1.ReasonRolledOut, fmt.Sprintf("Revision %s is stable in every placed cell", p.rev))
}

// to is the one place a rollout's phase is set.
func (p *planner) to(phase hubv1alpha1.RolloutPhase, msg string) {
	p.st.Phase, p.st.Message = phase, msg
}

// requestNext creates the RolloutStep that advances an automatic step.
func (p *planner) requestNext() {
	next := p.st.Step + 1
	ro := p.in.App.Name
	p.plan.Create = append(p.plan.Create, NewStep{
		Name: fmt.Sprintf("%s-%s-g%d-%d", ro, revisionSuffix(p.rev), p.in.App.Generation, next),
		Spec: hubv1alpha1.RolloutStepSpec{
			RolloutRef: corev1.LocalObjectReference{Name: ro},
			Action:     hubv1alpha1.ActionAdvance,
			Step:       &next,
			Revision:   p.rev,
			Reason:     fmt.Sprintf("automatic: step %d passed its gate", p.st.Step),
		},
	})
}

func (p *planner) markCurrent(phase hubv1alpha1.RolloutStepPhase, reason, msg string) {
	if p.st.CurrentStep != "" {
		p.plan.Steps = append(p.plan.Steps, StepUpdate{Name: p.st.CurrentStep, Phase: phase, Reason: reason, Message: msg, IfApplied: true})
	}
}

func (p *planner) event(typ, reason, msg string) {
	p.plan.Events = append(p.plan.Events, Event{Type: typ, Reason: reason, Message: msg})
}

// cell returns the status entry of a cell, adding it when missing.
func (p *planner) cell(name string) *hubv1alpha1.RolloutCell {
	st := &p.st
	if p.index == nil {
		p.index = make(map[string]int, len(st.Cells))
		for i := range st.Cells {
			p.index[st.Cells[i].Cell] = i
		}
	}
	if i, ok := p.index[name]; ok {
		return &st.Cells[i]
	}
	st.Cells = append(st.Cells, hubv1alpha1.RolloutCell{Cell: name})
	p.index[name] = len(st.Cells) - 1
	return &st.Cells[len(st.Cells)-1]
}

func (p *planner) canaryCells() []string {
	var out []string
	for _, e := range p.st.Cells {
		if e.Canary {
			out = append(out, e.Cell)
		}
	}
	return out
}

func (p *planner) anyTouched() bool {
	for _, e := range p.st.Cells {
		if e.LastKnownGood != "" {
			return true
		}
	}
	return false
}

// Written is what a WriteCells write did, by cell.
type Written struct {
	// Before is each written branch's head before the write ("" when it did not exist).
	Before map[string]string
	// Heads is each written branch's head after it.
	Heads map[string]string
	// Stable is the revision a newly touched cell ran, read from its branch.
	Stable map[string]string
	// Analyses is the id of the analysis rendered for each canary cell.
	Analyses map[string]string
}

// Recorded folds a WriteCells write into the status: a newly touched cell's last-known-good
// commit and stable revision, the commit each canary cell must now report and since when, and
// its analysis; a cell put back is let go.
func Recorded(st *hubv1alpha1.RolloutStatus, w Written, now time.Time) {
	t := metav1.NewTime(now)
	for i := range st.Cells {
		e := &st.Cells[i]
		if !e.Canary && e.LastKnownGood == "" {
			continue
		}
		if !e.Canary {
			// A cell put back keeps the analysis that judged it, for people to read.
			e.LastKnownGood, e.StableRevision, e.ExpectedCommit, e.ExpectedSince, e.Weight = "", "", "", nil, 0
			continue
		}
		switch id := w.Analyses[e.Cell]; {
		case id == "":
			e.Analysis = nil
		case e.Analysis == nil || e.Analysis.ID != id:
			e.Analysis = &hubv1alpha1.CellAnalysis{ID: id, Phase: hubv1alpha1.AnalysisRunning}
		}
		if e.LastKnownGood == "" {
			e.LastKnownGood = w.Before[e.Cell]
			if e.LastKnownGood == "" {
				e.LastKnownGood = LastKnownGoodNone
			}
			e.StableRevision = w.Stable[e.Cell]
		}
		if head := w.Heads[e.Cell]; head != "" && head != e.ExpectedCommit {
			e.ExpectedCommit, e.ExpectedSince = head, &t
		}
	}
}

func revisionSuffix(rev string) string {
	if i := strings.LastIndex(rev, "-"); i >= 0 && i+1 < len(rev) {
		rev = rev[i+1:]
	}
	if len(rev) > 8 {
		rev = rev[:8]
	}
	return rev
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
