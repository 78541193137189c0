package rollout

import (
	"fmt"
	"strings"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/render"
)

// take acts on one RolloutStep, or refuses it with a reason (nothing is written for it). It
// returns false when the decision failed as a whole.
func (p *planner) take(r Request) bool {
	st := &p.st
	refuse := func(reason, format string, args ...any) bool {
		p.refuse(r, reason, fmt.Sprintf(format, args...))
		return true
	}
	s := r.Spec
	if s.Revision != "" && s.Action != hubv1alpha1.ActionUndo && s.Revision != st.CanaryRevision {
		return refuse(hubv1alpha1.ReasonInvalidStep, "the step is for revision %s, but the rollout's canary is %s", s.Revision, orNone(st.CanaryRevision))
	}
	if s.Action != hubv1alpha1.ActionUndo && s.Action != hubv1alpha1.ActionResume && !active(st.Phase) {
		return refuse(hubv1alpha1.ReasonInvalidStep, "nothing to %s: the rollout is %s", strings.ToLower(string(s.Action)), orNone(string(st.Phase)))
	}
	why := ""
	if s.Reason != "" {
		why = ": " + s.Reason
	}
	done := func(reason, msg string) {
		p.plan.Steps = append(p.plan.Steps, StepUpdate{Name: r.Name, Phase: hubv1alpha1.StepSucceeded, Reason: reason, Message: msg})
	}
	switch s.Action {
	case hubv1alpha1.ActionPause:
		st.Paused = true
		done(hubv1alpha1.ReasonStepDone, fmt.Sprintf("Paused at step %d/%d", st.Step, st.Steps))
	case hubv1alpha1.ActionResume:
		msg := "Resumed"
		switch {
		case st.Phase == hubv1alpha1.PhasePaused && st.Analysis == hubv1alpha1.AnalysisInconclusive:
			// The step's analysis is rendered again under a new id: the cells measure afresh.
			st.AnalysisAttempt++
			p.plan.Write = WriteCells
			msg = fmt.Sprintf("Resumed: step %d/%d's analysis is measured again", st.Step, st.Steps)
		case !st.Paused:
			msg = "The rollout was not paused; nothing to resume"
		}
		st.Paused = false
		done(hubv1alpha1.ReasonStepDone, msg)
	case hubv1alpha1.ActionAbort:
		p.abort(fmt.Sprintf("Aborted by RolloutStep %s%s", r.Name, why))
		done(hubv1alpha1.ReasonAborted, "Every touched cell is back at its last-known-good commit")
	case hubv1alpha1.ActionAdvance, hubv1alpha1.ActionPromote:
		target := int32(len(p.strategy.Steps))
		var cells *hubv1alpha1.StepCells
		var weight *int32
		if s.Action == hubv1alpha1.ActionAdvance {
			if st.StepCompletedAt == nil {
				return refuse(hubv1alpha1.ReasonStepConflict, "step %d/%d (%s) is still in progress: %s. Wait for it, promote with --full to skip the gates, or abort",
					st.Step, st.Steps, orNone(st.CurrentStep), orNone(st.Message))
			}
			target = st.Step + 1
			if s.Step != nil {
				target = *s.Step
			}
			if target <= st.Step || target > int32(len(p.strategy.Steps)) {
				return refuse(hubv1alpha1.ReasonInvalidStep, "cannot advance from step %d to step %d of %d", st.Step, target, len(p.strategy.Steps))
			}
			cells, weight = s.Cells, s.Weight
		}
		mask, w, err := p.stepMask(target, cells, weight)
		if err != nil {
			return refuse(hubv1alpha1.ReasonInvalidStep, "%s", err.Error())
		}
		p.moveTo(target, mask, w, r.Name)
		p.plan.Steps = append(p.plan.Steps, StepUpdate{Name: r.Name, Phase: hubv1alpha1.StepApplied, Reason: hubv1alpha1.ReasonStepApplied, StepIndex: target,
			Message: fmt.Sprintf("Step %d/%d: %s at %d%% in %s%s", target, len(p.strategy.Steps), p.rev, w, strings.Join(mask, ", "), why)})
	case hubv1alpha1.ActionUndo:
		return p.undo(r)
	default:
		return refuse(hubv1alpha1.ReasonInvalidStep, "unknown action %q", s.Action)
	}
	return true
}

// refuse marks a step Refused with a reason.
func (p *planner) refuse(r Request, reason, msg string) {
	p.plan.Steps = append(p.plan.Steps, StepUpdate{Name: r.Name, Phase: hubv1alpha1.StepRefused, Reason: reason, Message: msg})
}

// undo rolls forward to an earlier revision by setting the app's template back to it; the
// rollout then walks the strategy for it like for any change. A Git-synced app is refused: its
// spec comes from Git, where the revert belongs.
func (p *planner) undo(r Request) bool {
	st := &p.st
	refuse := func(format string, args ...any) bool {
		p.refuse(r, hubv1alpha1.ReasonUndoFailed, fmt.Sprintf(format, args...))
		return true
	}
	app := p.plan.App
	if sc := app.Annotations[hubv1alpha1.SourceCommitAnnotation]; sc != "" {
		return refuse("ServerlessApp %s is synced from Git (commit %s); revert the change in Git instead, or abort the rollout", app.Name, short(sc))
	}
	target := r.Spec.Revision
	if target == "" {
		switch {
		case active(st.Phase) || st.Phase == hubv1alpha1.PhaseAborted:
			target = st.StableRevision
		case len(st.History) >= 2:
			target = st.History[len(st.History)-2].Revision
		}
	}
	if target == "" {
		return refuse("there is no earlier revision to go back to")
	}
	if target == p.rev {
		return refuse("revision %s is already the app's revision", target)
	}
	var rec *hubv1alpha1.RevisionRecord
	known := make([]string, 0, len(st.History))
	for i := range st.History {
		known = append(known, st.History[i].Revision)
		if st.History[i].Revision == target {
			rec = st.History[i].DeepCopy()
		}
	}
	if rec == nil {
		return refuse("revision %s is not in the rollout's history (known: %s)", target, orNone(strings.Join(known, ", ")))
	}
	back := app.DeepCopy()
	back.Spec.Template = *rec.Template.DeepCopy()
	p.plan.App, p.plan.SetTemplate, p.in.App = back, rec, back
	p.plan.Undone = &StepUpdate{Name: r.Name, Phase: hubv1alpha1.StepSucceeded, Reason: hubv1alpha1.ReasonStepDone,
		Message: fmt.Sprintf("Rolling forward to revision %s: the app's template is set back to it and the rollout walks the strategy again", target)}
	p.rev = render.AppRevision(back)
	if p.needsStart() {
		return p.start()
	}
	return true
}
