package status

import (
	"fmt"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
)

// Synced is an AppSource that applied a commit. The message names the commit and how many
// objects it holds; what changed goes into the Synced event, so that the status of a commit
// applied again (after a restart or a rebuilt hub) reads the same.
func Synced(commit string, objects int) outcome.Outcome {
	return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonSynced, Message: fmt.Sprintf("Synced commit %s: %d objects", short(commit), objects)}
}

// Suspended is an object whose spec.suspend is set: Ready (what it last did stays), with the
// reason Argo CD's health check shows as Suspended.
func Suspended(msg string) outcome.Outcome {
	return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonSuspended, Message: msg}
}

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
