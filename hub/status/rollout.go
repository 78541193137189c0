package status

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/rollout"
)

// MaxHistory bounds the revisions a Rollout keeps for undo.
const MaxHistory = 10

// AllAtOnce is where an all-at-once rollout stands at now: one step, the app's revision as the
// canary until every cell runs it ready, then recorded as stable. It reads the app's per-cell
// summary, so it follows the same intake poll as the app.
func AllAtOnce(prev hubv1alpha1.RolloutStatus, app *hubv1alpha1.ServerlessApp, now time.Time) hubv1alpha1.RolloutStatus {
	st := hubv1alpha1.RolloutStatus{
		ObservedGeneration: prev.ObservedGeneration,
		Conditions:         prev.Conditions,
		StableRevision:     prev.StableRevision,
		History:            prev.History,
		Step:               1,
		Steps:              1,
		StepDisplay:        "1/1",
		TotalCells:         int32(app.Status.CellCount),
	}
	for _, c := range app.Status.CellStatuses {
		rc := hubv1alpha1.RolloutCell{Cell: c.Cell, Revision: c.Revision, Message: c.Message}
		rc.Updated = c.DesiredRevision != "" && c.Revision == c.DesiredRevision
		rc.Ready = rc.Updated && c.Ready
		if rc.Updated {
			st.UpdatedCells++
		}
		if rc.Ready {
			st.ReadyCells++
		}
		st.Cells = append(st.Cells, rc)
	}
	revision := app.Status.Revision
	switch {
	case revision == "":
		st.Phase = hubv1alpha1.PhaseProgressing
	case revision == prev.StableRevision || (st.TotalCells > 0 && st.ReadyCells == st.TotalCells):
		if revision != prev.StableRevision {
			st.History = AppendHistory(st.History, revision, app, now)
		}
		st.Phase, st.StableRevision, st.CanaryRevision, st.CanaryWeight = hubv1alpha1.PhaseCompleted, revision, "", 0
	default:
		st.Phase, st.CanaryRevision, st.CanaryWeight = hubv1alpha1.PhaseProgressing, revision, 100
	}
	st.CellsDisplay = fmt.Sprintf("%d/%d/%d", st.UpdatedCells, st.ReadyCells, st.TotalCells)
	return st
}

// AllAtOnceOutcome says how an all-at-once rollout stands.
func AllAtOnceOutcome(st hubv1alpha1.RolloutStatus, app *hubv1alpha1.ServerlessApp) outcome.Outcome {
	if st.Phase == hubv1alpha1.PhaseCompleted {
		return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonRolledOut,
			Message: fmt.Sprintf("Revision %s runs in %d of %d cells, ready in %d", st.StableRevision, st.UpdatedCells, st.TotalCells, st.ReadyCells)}
	}
	return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonProgressing,
		Message: fmt.Sprintf("Rolling out %s: %s cells updated/ready/total", app.Status.Revision, st.CellsDisplay)}
}

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

// CanaryStep is what the decision on an active canary's current step rests on.
type CanaryStep struct {
	App, Namespace string
	Revision       string
	Step, Steps    int32
	// Gate is the step's gate, judged from the cells' reports.
	Gate rollout.Gate
	// Paused is true when a RolloutStep paused the rollout.
	Paused bool
	// Pause is the strategy's pause after this step (nil for none).
	Pause *hubv1alpha1.StepPause
	// PassedAt is when the step's gate first passed; nil until it has.
	PassedAt *time.Time
}

// CanaryAction is what the controller must do after a decision.
type CanaryAction int

const (
	// Wait: nothing to write; judge again later.
	Wait CanaryAction = iota
	// Abort: put every touched cell back at its last-known-good commit.
	Abort
	// Complete: the last step passed; record the revision as stable.
	Complete
	// RequestNext: create the RolloutStep that advances to the next step.
	RequestNext
)

// CanaryDecision is where an active canary stands and what comes next.
type CanaryDecision struct {
	Phase   hubv1alpha1.RolloutPhase
	Message string
	Outcome outcome.Outcome
	Action  CanaryAction
	// FirstPass is true when the gate passed for the first time: the step's time of passing
	// is now, and its RolloutStep succeeded.
	FirstPass bool
	// RecheckAfter is when to judge again without an event (a bake that ends, a heartbeat that
	// ages); 0 means only on an event.
	RecheckAfter time.Duration
}

// Canary decides an active canary step at now: abort on a failed gate, wait while cells
// converge (paused when a RolloutStep paused it), and once the gate passes complete the last
// step, hold for a pause or an approval, bake until a given time, or ask for the next step.
// poll is how often a waiting gate is judged again. Messages name a bake's end, never a
// countdown, so the status does not change while the state does not.
func Canary(s CanaryStep, now time.Time, poll time.Duration) CanaryDecision {
	at := fmt.Sprintf("Step %d/%d", s.Step, s.Steps)
	wait := func(phase hubv1alpha1.RolloutPhase, reason, msg string, after time.Duration) CanaryDecision {
		return CanaryDecision{Phase: phase, Message: msg, Outcome: outcome.Outcome{Kind: outcome.Waiting, Reason: reason, Message: msg}, RecheckAfter: after}
	}
	switch {
	case s.Gate.Abort:
		return CanaryDecision{Phase: hubv1alpha1.PhaseAborted, Message: s.Gate.Reason, Action: Abort,
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
	var d CanaryDecision
	switch {
	case s.Step >= s.Steps:
		msg := fmt.Sprintf("Revision %s runs in every placed cell", s.Revision)
		if len(s.Gate.Skipped) > 0 {
			msg += "; skipped stale cells: " + strings.Join(s.Gate.Skipped, ", ")
		}
		d = CanaryDecision{Phase: hubv1alpha1.PhaseCompleted, Message: msg, Action: Complete,
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
		d.Action = RequestNext
	}
	d.FirstPass = s.PassedAt == nil
	return d
}

// Analyses writes each canary cell's reported analysis of the step into its entry (a cell that
// has not reported one yet is Running) and returns where the step's analysis stands over its
// cells: the worst phase, or "" when no canary cell is analysed.
func Analyses(cells []hubv1alpha1.RolloutCell, g rollout.Gate) hubv1alpha1.AnalysisPhase {
	overall := ""
	for i := range cells {
		e := &cells[i]
		if !e.Canary || e.Analysis == nil {
			continue
		}
		e.Analysis.Phase, e.Analysis.Metrics = hubv1alpha1.AnalysisRunning, nil
		if rep, ok := g.Analyses[e.Cell]; ok {
			e.Analysis.Phase, e.Analysis.Metrics = rollout.KnownPhase(rep.Phase), rollout.MetricResults(rep)
		}
		overall = agentv1alpha1.WorseAnalysis(overall, string(e.Analysis.Phase))
	}
	return hubv1alpha1.AnalysisPhase(overall)
}

// CanaryAtRest says how a canary stands when no step is active: completed, aborted, or held
// because this hub lost its state mid-canary.
func CanaryAtRest(st hubv1alpha1.RolloutStatus, held string) outcome.Outcome {
	switch {
	case held != "":
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonStateLost, Message: held}
	case st.Phase == hubv1alpha1.PhaseAborted:
		return outcome.Outcome{Kind: outcome.Failed, Reason: hubv1alpha1.ReasonAborted, Message: st.Message}
	default:
		return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonRolledOut, Message: st.Message}
	}
}

// Step is the outcome a RolloutStep shows for its phase: refused steps are Stalled (a person
// must create a valid one), succeeded ones Ready, superseded ones failed, the rest waiting.
func Step(phase hubv1alpha1.RolloutStepPhase, reason, msg string) outcome.Outcome {
	kind := outcome.Waiting
	switch phase {
	case hubv1alpha1.StepRefused:
		kind = outcome.Stalled
	case hubv1alpha1.StepSucceeded:
		kind = outcome.Succeeded
	case hubv1alpha1.StepSuperseded:
		kind = outcome.Failed
	}
	return outcome.Outcome{Kind: kind, Reason: reason, Message: msg}
}
