package hub

import (
	"errors"

	"github.com/cellsync/cellsync/hub/cellbranch"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/render"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
)

// outcomeOf sorts an engine error into an outcome.
func outcomeOf(err error) outcome.Outcome {
	var (
		inv      *render.InvalidError
		conflict *cellbranch.ConflictError
		auth     *gitstore.AuthError
		cfg      *gitstore.ConfigError
		down     *gitstore.UnavailableError
	)
	switch {
	case errors.As(err, &inv):
		return outcome.Outcome{Kind: outcome.Stalled, Reason: inv.Reason, Message: inv.Message}
	case errors.As(err, &conflict):
		return outcome.Outcome{Kind: outcome.Stalled, Reason: hubv1alpha1.ReasonConflict, Message: conflict.Message}
	case errors.As(err, &auth):
		return outcome.Outcome{Kind: outcome.Stalled, Reason: hubv1alpha1.ReasonGitAuthFailed, Message: auth.Error()}
	case errors.As(err, &cfg):
		return outcome.Outcome{Kind: outcome.Stalled, Reason: hubv1alpha1.ReasonGitPushFailed, Message: cfg.Error()}
	case errors.As(err, &down):
		return outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonGitUnavailable, Message: down.Error() + " (retrying)"}
	default:
		return outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonGitPushFailed, Message: err.Error() + " (retrying)"}
	}
}

// boundedNames keeps a status list short; the count field says how many there are in all.
func boundedNames(names []string) []string {
	if len(names) > hubv1alpha1.MaxStatusCells {
		return append([]string(nil), names[:hubv1alpha1.MaxStatusCells]...)
	}
	return names
}
