package status

import (
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
)

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
