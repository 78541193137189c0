package rollout

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
)

// Strategy is how a rollout walks: its steps, the pause after each, and how its gates treat
// stale and failing cells. AllAtOnce is the one-step strategy: every placed cell at 100 %, no
// last-known-good kept, judged on the app's per-cell summary.
type Strategy struct {
	Steps            []Step
	Pauses           []*hubv1alpha1.StepPause
	Policy           StaleCellPolicy
	FailureThreshold time.Duration
	AllAtOnce        bool
}

// StrategyOf is an app's strategy.
func StrategyOf(app *hubv1alpha1.ServerlessApp) Strategy {
	if !app.IsCanary() || app.Spec.Strategy.Canary == nil {
		all := int32(100)
		return Strategy{AllAtOnce: true, Steps: []Step{{Cells: CellSelection{Percent: &all}, Weight: 100}}, Pauses: []*hubv1alpha1.StepPause{nil}}
	}
	c := app.Spec.Strategy.Canary
	s := Strategy{Steps: Steps(c), Policy: StaleCellPolicy(c.StaleCellPolicy)}
	for i := range c.Steps {
		s.Pauses = append(s.Pauses, c.Steps[i].Pause)
	}
	if c.FailureThreshold != nil {
		s.FailureThreshold = c.FailureThreshold.Duration
	}
	return s
}

// progress judges the current step's gate and decides: complete, abort, wait (paused, baking,
// converging), or ask for the next step. At rest it keeps a completed app rendered.
func (p *planner) progress() {
	st := &p.st
	switch st.Phase {
	case hubv1alpha1.PhaseCompleted:
		p.plan.Write, p.plan.Resync = WriteAll, true
		p.plan.Outcome = AtRest(*st, "")
		return
	case hubv1alpha1.PhaseAborted:
		p.plan.Outcome = AtRest(*st, "")
		return
	}
	if p.in.Reapply && !p.strategy.AllAtOnce {
		// The step is rendered again (a branch head may have moved), then judged.
		p.plan.Write, p.plan.Again = WriteCells, true
		p.plan.Outcome = outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonProgressing, Message: st.Message}
		return
	}
	if p.strategy.AllAtOnce {
		// Every decision keeps the app rendered; the write is skipped while nothing changed.
		p.plan.Write = WriteAll
	}
	facts := StepFacts{App: p.in.App.Name, Namespace: p.in.App.Namespace, Revision: p.rev, Step: st.Step, Steps: st.Steps,
		Gate: p.gate(), Paused: st.Paused, Pause: p.strategy.Pauses[st.Step-1]}
	if st.StepCompletedAt != nil {
		t := st.StepCompletedAt.Time
		facts.PassedAt = &t
	}
	d := Next(facts, p.in.Now, p.in.Poll)
	if phase := Analyses(st.Cells, facts.Gate); phase != "" {
		st.Analysis = phase
	}
	for i := range st.Cells {
		st.Cells[i].Message = facts.Gate.Notes[st.Cells[i].Cell]
		st.Cells[i].Skipped = false
	}
	p.plan.Outcome, p.plan.RecheckAfter = d.Outcome, d.RecheckAfter
	if d.Action == ActAbort {
		p.abort(d.Message)
		p.plan.RecheckAfter = 0
		return
	}
	if facts.Gate.Complete {
		st.SkippedCells = facts.Gate.Skipped
		for _, n := range facts.Gate.Skipped {
			p.cell(n).Skipped = true
		}
	}
	if d.FirstPass {
		t := metav1.NewTime(p.in.Now)
		st.StepCompletedAt = &t
		msg := fmt.Sprintf("Step %d/%d complete: %s", st.Step, st.Steps, facts.Gate.Reason)
		p.markCurrent(hubv1alpha1.StepSucceeded, hubv1alpha1.ReasonStepComplete, msg)
		if !p.strategy.AllAtOnce {
			p.event(corev1.EventTypeNormal, hubv1alpha1.ReasonStepComplete, msg)
		}
	}
	switch d.Action {
	case ActComplete:
		// The completing decision renders every cell plainly before the status says Completed,
		// so a completed rollout's branches are already at rest.
		p.complete()
		p.plan.Write = WriteAll
		p.plan.Outcome = AtRest(*st, "")
		p.plan.RecheckAfter, p.plan.Resync = 0, true
		return
	case ActRequestNext:
		p.requestNext()
	}
	p.to(d.Phase, d.Message)
}

// gate judges the current step: a canary from the masked cells' reports of the commits it
// wrote; all at once from the app's per-cell summary.
func (p *planner) gate() Gate {
	if p.strategy.AllAtOnce {
		return JudgeRevisions(p.in.App, p.rev)
	}
	var exps []Expectation
	for _, e := range p.st.Cells {
		if !e.Canary {
			continue
		}
		since := p.in.Now
		if e.ExpectedSince != nil {
			since = e.ExpectedSince.Time
		}
		exp := Expectation{Cell: e.Cell, Commit: e.ExpectedCommit, Since: since}
		if e.Analysis != nil {
			exp.AnalysisID = e.Analysis.ID
		}
		exps = append(exps, exp)
	}
	opts := Options{StaleAfter: p.in.StaleAfter, Policy: p.strategy.Policy, FailureThreshold: p.strategy.FailureThreshold}
	return Judge(p.in.App.Name, p.in.App.Namespace, exps, p.in.Reports, p.in.Now, opts)
}

// JudgeRevisions is an all-at-once gate: it passes when the app's summary is of revision and
// every placed cell runs its desired revision, ready. It counts with the summary's counters,
// which cover every placed cell (its list of cells is bounded).
func JudgeRevisions(app *hubv1alpha1.ServerlessApp, revision string) Gate {
	g := Gate{Notes: map[string]string{}}
	if app.Status.Revision != revision {
		g.Reason = fmt.Sprintf("Rolling out %s: the app's cells are not summarized for it yet", revision)
		return g
	}
	for _, c := range app.Status.CellStatuses {
		if c.DesiredRevision == "" || c.Revision != c.DesiredRevision || !c.Ready {
			g.Notes[c.Cell] = c.Message
		}
	}
	g.Complete = app.Status.CellCount > 0 && app.Status.RolledOutCells == app.Status.CellCount
	g.Reason = fmt.Sprintf("Rolling out %s: %d of %d cells run it ready", revision, app.Status.RolledOutCells, app.Status.CellCount)
	return g
}

// StepFacts is what the decision on an active step rests on.
type StepFacts struct {
	App, Namespace string
	Revision       string
	Step, Steps    int32
	// Gate is the step's gate, judged from the cells' reports.
	Gate Gate
	// Paused is true when a RolloutStep paused the rollout.
	Paused bool
	// Pause is the strategy's pause after this step (nil for none).
	Pause *hubv1alpha1.StepPause
	// PassedAt is when the step's gate first passed; nil until it has.
	PassedAt *time.Time
}

// Action is what follows a decision on an active step.
type Action int

const (
	// ActWait: nothing to write; judge again later.
	ActWait Action = iota
	// ActAbort: put every touched cell back at its last-known-good commit.
	ActAbort
	// ActComplete: the last step passed; record the revision as stable.
	ActComplete
	// ActRequestNext: create the RolloutStep that advances to the next step.
	ActRequestNext
)

// Decision is where an active step stands and what comes next.
type Decision struct {
	Phase   hubv1alpha1.RolloutPhase
	Message string
	Outcome outcome.Outcome
	Action  Action
	// FirstPass is true when the gate passed for the first time: the step's time of passing
	// is now, and its RolloutStep succeeded.
	FirstPass bool
	// RecheckAfter is when to judge again without an event (a bake that ends, a heartbeat that
	// ages); 0 means only on an event.
	RecheckAfter time.Duration
}

// Next decides an active step at now: abort on a failed gate, wait while cells converge
// (paused when a RolloutStep paused it), and once the gate passes complete the last step, hold
// for a pause or an approval, bake until a given time, or ask for the next step. poll is how
// often a waiting gate is judged again. Messages name a bake's end, never a countdown, so the
// status does not change while the state does not.
func Next(s StepFacts, now time.Time, poll time.Duration) Decision {
	at := fmt.Sprintf("Step %d/%d", s.Step, s.Steps)
	wait := func(phase hubv1alpha1.RolloutPhase, reason, msg string, after time.Duration) Decision {
		return Decision{Phase: phase, Message: msg, Outcome: outcome.Outcome{Kind: outcome.Waiting, Reason: reason, Message: msg}, RecheckAfter: after}
	}
	switch {
	case s.Gate.Abort:
		return Decision{Phase: hubv1alpha1.PhaseAborted, Message: s.Gate.Reason, Action: ActAbort,
			Outcome: outcome.Outcome{Kind: outcome.Failed, Reason: hubv1alpha1.ReasonAborted, Message: s.Gate.Reason}}
	case s.Gate.Inconclusive:
		// Not a pass, not a failure: a person decides (promote to skip the gate, or abort).
		return wait(hubv1alpha1.PhasePaused, hubv1alpha1.ReasonAnalysisInconclusive,
			fmt.Sprintf("%s: %s; paused: fix the cell's metrics, then measure again (kubectl cells resume %s -n %s), skip the gates (kubectl cells promote %s -n %s --full), or abort",
				at, s.Gate.Reason, s.App, s.Namespace, s.App, s.Namespace), poll)
	case !s.Gate.Complete && s.Paused:
		return wait(hubv1alpha1.PhasePaused, hubv1alpha1.ReasonPaused, fmt.Sprintf("Paused by a RolloutStep; %s: %s", at, s.Gate.Reason), poll)
	case !s.Gate.Complete:
		return wait(hubv1alpha1.PhaseProgressing, hubv1alpha1.ReasonProgressing, fmt.Sprintf("%s: %s", at, s.Gate.Reason), poll)
	}
	passed := now
	if s.PassedAt != nil {
		passed = *s.PassedAt
	}
	var d Decision
	switch {
	case s.Step >= s.Steps:
		msg := fmt.Sprintf("Revision %s runs in every placed cell", s.Revision)
		if len(s.Gate.Skipped) > 0 {
			msg += "; skipped stale cells: " + some(s.Gate.Skipped, ", ")
		}
		d = Decision{Phase: hubv1alpha1.PhaseCompleted, Message: msg, Action: ActComplete,
			Outcome: outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonRolledOut, Message: msg}}
	case s.Paused:
		d = wait(hubv1alpha1.PhasePaused, hubv1alpha1.ReasonPaused, at+" is healthy; paused by a RolloutStep: resume or promote", 0)
	case s.Pause != nil && s.Pause.UntilApproved:
		d = wait(hubv1alpha1.PhasePaused, hubv1alpha1.ReasonAwaitingApproval,
			fmt.Sprintf("%s is healthy; waiting for approval: kubectl cells promote %s -n %s", at, s.App, s.Namespace), 0)
	case s.Pause != nil && s.Pause.Duration != nil && now.Before(passed.Add(s.Pause.Duration.Duration)):
		until := passed.Add(s.Pause.Duration.Duration)
		d = wait(hubv1alpha1.PhaseProgressing, hubv1alpha1.ReasonProgressing,
			fmt.Sprintf("%s is healthy; baking until %s", at, until.UTC().Format(time.RFC3339)), until.Sub(now))
	default:
		d = wait(hubv1alpha1.PhaseProgressing, hubv1alpha1.ReasonProgressing, fmt.Sprintf("%s is healthy; advancing to step %d", at, s.Step+1), poll)
		d.Action = ActRequestNext
	}
	d.FirstPass = s.PassedAt == nil
	return d
}

// Analyses writes each canary cell's reported analysis of the step into its entry (a cell that
// has not reported one yet is Running) and returns where the step's analysis stands over its
// cells: the worst phase, or "" when no canary cell is analysed.
func Analyses(cells []hubv1alpha1.RolloutCell, g Gate) hubv1alpha1.AnalysisPhase {
	overall := ""
	for i := range cells {
		e := &cells[i]
		if !e.Canary || e.Analysis == nil {
			continue
		}
		e.Analysis.Phase, e.Analysis.Metrics = hubv1alpha1.AnalysisRunning, nil
		if rep, ok := g.Analyses[e.Cell]; ok {
			e.Analysis.Phase, e.Analysis.Metrics = KnownPhase(rep.Phase), MetricResults(rep)
		}
		overall = agentv1alpha1.WorseAnalysis(overall, string(e.Analysis.Phase))
	}
	return hubv1alpha1.AnalysisPhase(overall)
}

// AtRest says how a rollout stands when no step is active: completed, aborted, or held because
// this hub lost its state mid-canary.
func AtRest(st hubv1alpha1.RolloutStatus, held string) outcome.Outcome {
	switch {
	case held != "":
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonStateLost, Message: held}
	case st.Phase == hubv1alpha1.PhaseAborted:
		return outcome.Outcome{Kind: outcome.Failed, Reason: hubv1alpha1.ReasonAborted, Message: st.Message}
	default:
		return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonRolledOut, Message: st.Message}
	}
}

// MaxHistory bounds the revisions a Rollout keeps for undo.
const MaxHistory = 10

// AppendHistory records a revision that completed at now, newest last, at most MaxHistory.
func AppendHistory(h []hubv1alpha1.RevisionRecord, revision string, app *hubv1alpha1.ServerlessApp, now time.Time) []hubv1alpha1.RevisionRecord {
	out := make([]hubv1alpha1.RevisionRecord, 0, len(h)+1)
	for _, r := range h {
		if r.Revision != revision {
			out = append(out, r)
		}
	}
	out = append(out, hubv1alpha1.RevisionRecord{Revision: revision, Template: *app.Spec.Template.DeepCopy(), CompletedAt: metav1.NewTime(now.UTC().Truncate(time.Second))})
	if len(out) > MaxHistory {
		out = out[len(out)-MaxHistory:]
	}
	return out
}
