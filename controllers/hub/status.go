package hub

import (
	"context"
	"errors"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/fluxcd/pkg/runtime/patch"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cellsync/cellsync/hub/cellbranch"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/render"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// outcomeKind says how a reconcile ended, which decides the conditions.
type outcomeKind int

const (
	// succeeded: the desired state is written.
	succeeded outcomeKind = iota
	// waiting: progress needs something else to happen first (an object to appear).
	waiting
	// retrying: a passing failure; the controller retries with backoff.
	retrying
	// stalled: a person must change something; retrying will not help.
	stalled
)

// outcome is the result of a reconcile, ready to become conditions and an event.
type outcome struct {
	kind    outcomeKind
	reason  string
	message string
}

// ownedConditions are the conditions the hub reconcilers write.
var ownedConditions = []string{meta.ReadyCondition, meta.ReconcilingCondition, meta.StalledCondition}

// setConditions turns an outcome into kstatus conditions: Ready always; Reconciling and Stalled
// only when true, never both.
func setConditions(obj conditions.Setter, o outcome) {
	switch o.kind {
	case succeeded:
		conditions.MarkTrue(obj, meta.ReadyCondition, o.reason, "%s", o.message)
		conditions.Delete(obj, meta.ReconcilingCondition)
		conditions.Delete(obj, meta.StalledCondition)
	case waiting, retrying:
		conditions.MarkFalse(obj, meta.ReadyCondition, o.reason, "%s", o.message)
		reason := meta.ProgressingReason
		if o.kind == retrying {
			reason = meta.ProgressingWithRetryReason
		}
		conditions.MarkReconciling(obj, reason, "%s", o.message)
		conditions.Delete(obj, meta.StalledCondition)
	case stalled:
		conditions.MarkFalse(obj, meta.ReadyCondition, o.reason, "%s", o.message)
		conditions.MarkStalled(obj, o.reason, "%s", o.message)
		conditions.Delete(obj, meta.ReconcilingCondition)
	}
}

// outcomeOf sorts an engine error into an outcome.
func outcomeOf(err error) outcome {
	var (
		inv      *render.InvalidError
		conflict *cellbranch.ConflictError
		auth     *gitstore.AuthError
		cfg      *gitstore.ConfigError
		down     *gitstore.UnavailableError
	)
	switch {
	case errors.As(err, &inv):
		return outcome{kind: stalled, reason: inv.Reason, message: inv.Message}
	case errors.As(err, &conflict):
		return outcome{kind: stalled, reason: hubv1alpha1.ReasonConflict, message: conflict.Message}
	case errors.As(err, &auth):
		return outcome{kind: stalled, reason: hubv1alpha1.ReasonGitAuthFailed, message: auth.Error()}
	case errors.As(err, &cfg):
		return outcome{kind: stalled, reason: hubv1alpha1.ReasonGitPushFailed, message: cfg.Error()}
	case errors.As(err, &down):
		return outcome{kind: retrying, reason: hubv1alpha1.ReasonGitUnavailable, message: down.Error() + " (retrying)"}
	default:
		return outcome{kind: retrying, reason: hubv1alpha1.ReasonGitPushFailed, message: err.Error() + " (retrying)"}
	}
}

// finish is every hub reconciler's exit: conditions from the outcome, a Warning event when
// something is wrong, and one patch. A generation counts as observed unless it is being retried.
func finish(ctx context.Context, patcher *patch.SerialPatcher, obj statusObject, out outcome, rec record.EventRecorder) error {
	setConditions(obj, out)
	if out.kind == stalled || out.kind == retrying {
		rec.Event(obj, corev1.EventTypeWarning, out.reason, out.message)
	}
	opts := []patch.Option{patch.WithOwnedConditions{Conditions: ownedConditions}, patch.WithFieldOwner(FieldManager)}
	if out.kind != retrying {
		opts = append(opts, patch.WithStatusObservedGeneration{})
	}
	if err := patcher.Patch(ctx, obj, opts...); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// statusObject is a hub object with conditions.
type statusObject interface {
	client.Object
	conditions.Setter
}

// boundedNames keeps a status list short; the count field says how many there are in all.
func boundedNames(names []string) []string {
	if len(names) > hubv1alpha1.MaxStatusCells {
		return append([]string(nil), names[:hubv1alpha1.MaxStatusCells]...)
	}
	return names
}
