package status

import (
	"errors"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/gitpack"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/analysis"
	"github.com/cellsync/cellsync/hub/cellbranch"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/render"
	"github.com/cellsync/cellsync/hub/rollout"
)

// Fix says what must happen before a failed reconcile can succeed, which decides when the
// controller looks again.
type Fix int

const (
	// FixRetry: a passing failure (Git down, an apiserver hiccup); retried with backoff.
	FixRetry Fix = iota
	// FixSpec: the object's own spec is wrong; nothing is retried until the spec changes (a
	// watch brings the object back).
	FixSpec
	// FixElsewhere: something the object does not own must change (a Secret, another Cell, a
	// commit in Git, a branch that does not exist yet); looked at again at the resync.
	FixElsewhere
)

// Verdict is an error sorted into an outcome and who fixes it.
type Verdict struct {
	outcome.Outcome
	Fix Fix
}

// Refusal is an error whose content a person must change outside the object, for example a
// commit of an AppSource's branch the hub will not apply.
type Refusal interface {
	error
	RefusalReason() string
}

// Classify sorts any error of the hub's engines into one verdict. It is the only place the hub
// decides between Stalled (a person must act), Waiting and retrying.
func Classify(err error) Verdict {
	var (
		inv      *render.InvalidError
		strategy *rollout.Error
		conflict *cellbranch.ConflictError
		auth     *gitstore.AuthError
		cfg      *gitstore.ConfigError
		down     *gitstore.UnavailableError
		missing  *gitstore.BranchNotFoundError
		refused  Refusal
		tmpl     *analysis.Error
		limit    *gitpack.LimitError
		table    *rollout.TableError
	)
	stalled := func(fix Fix, reason, msg string) Verdict {
		return Verdict{Outcome: outcome.Outcome{Kind: outcome.Stalled, Reason: reason, Message: msg}, Fix: fix}
	}
	switch {
	case err == nil:
		return Verdict{}
	case errors.As(err, &inv):
		return stalled(FixSpec, inv.Reason, inv.Message)
	case errors.As(err, &tmpl):
		return stalled(FixSpec, tmpl.Reason, tmpl.Message)
	case errors.As(err, &strategy):
		return stalled(FixSpec, hubv1alpha1.ReasonInvalidStrategy, strategy.Message)
	case errors.As(err, &table):
		return stalled(FixElsewhere, hubv1alpha1.ReasonCellTableInvalid, table.Error())
	case errors.As(err, &limit):
		return stalled(FixElsewhere, hubv1alpha1.ReasonLimitExceeded, limit.Message)
	case errors.As(err, &refused):
		return stalled(FixElsewhere, refused.RefusalReason(), refused.Error())
	case errors.As(err, &conflict):
		return stalled(FixElsewhere, hubv1alpha1.ReasonConflict, conflict.Message)
	case errors.As(err, &auth):
		return stalled(FixElsewhere, hubv1alpha1.ReasonGitAuthFailed, auth.Error())
	case errors.As(err, &cfg):
		return stalled(FixElsewhere, hubv1alpha1.ReasonGitPushFailed, cfg.Error())
	case errors.As(err, &missing):
		return Verdict{Outcome: outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonBranchNotFound, Message: missing.Error()}, Fix: FixElsewhere}
	case errors.As(err, &down):
		return Verdict{Outcome: outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonGitUnavailable, Message: down.Error() + " (retrying)"}}
	default:
		return Verdict{Outcome: outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonProgressing, Message: err.Error() + " (retrying)"}}
	}
}

// Fail is how a reconcile that met err ends: its outcome, by Classify, and what to return, by
// Requeue.
func Fail(err error, resync time.Duration) (outcome.Outcome, ctrl.Result, error) {
	v := Classify(err)
	res, err := Requeue(v, err, resync)
	return v.Outcome, res, err
}

// Requeue is the one rule for what a reconciler returns after a verdict: a retry backs off
// (the error goes to controller-runtime), a problem in the object's own spec is terminal, and a
// problem fixed elsewhere is looked at again after the resync, jittered.
func Requeue(v Verdict, err error, resync time.Duration) (ctrl.Result, error) {
	switch v.Fix {
	case FixSpec:
		return ctrl.Result{}, reconcile.TerminalError(err)
	case FixElsewhere:
		return ctrl.Result{RequeueAfter: outcome.Jitter(resync)}, nil
	default:
		return ctrl.Result{}, err
	}
}
