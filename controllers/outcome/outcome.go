// Package outcome is the status skeleton every cellsync reconciler ends with, hub and agent
// alike: how a reconcile ended (Outcome) becomes kstatus conditions, a Warning event when
// something is wrong, and one patch.
package outcome

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/fluxcd/pkg/runtime/patch"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Kind says how a reconcile ended, which decides the conditions.
type Kind int

const (
	// Succeeded: the desired state is reached.
	Succeeded Kind = iota
	// Waiting: progress needs something else to happen first.
	Waiting
	// Retrying: a passing failure; the controller retries with backoff.
	Retrying
	// Stalled: a person must change something; retrying will not help.
	Stalled
	// Failed: done, and what was done is unhealthy (Flux's HealthCheckFailed): Ready=False
	// without Reconciling or Stalled; a new revision may fix it.
	Failed
)

// Outcome is the result of a reconcile, ready to become conditions and an event.
type Outcome struct {
	Kind    Kind
	Reason  string
	Message string
}

// Owned are the conditions every reconciler writes through Finish.
var Owned = []string{meta.ReadyCondition, meta.ReconcilingCondition, meta.StalledCondition}

// SetConditions turns an outcome into kstatus conditions: Ready always; Reconciling and
// Stalled only when true, never both.
func SetConditions(obj conditions.Setter, o Outcome) {
	switch o.Kind {
	case Succeeded:
		conditions.MarkTrue(obj, meta.ReadyCondition, o.Reason, "%s", o.Message)
		conditions.Delete(obj, meta.ReconcilingCondition)
		conditions.Delete(obj, meta.StalledCondition)
	case Waiting, Retrying:
		conditions.MarkFalse(obj, meta.ReadyCondition, o.Reason, "%s", o.Message)
		reason := meta.ProgressingReason
		if o.Kind == Retrying {
			reason = meta.ProgressingWithRetryReason
		}
		conditions.MarkReconciling(obj, reason, "%s", o.Message)
		conditions.Delete(obj, meta.StalledCondition)
	case Stalled:
		conditions.MarkFalse(obj, meta.ReadyCondition, o.Reason, "%s", o.Message)
		conditions.MarkStalled(obj, o.Reason, "%s", o.Message)
		conditions.Delete(obj, meta.ReconcilingCondition)
	case Failed:
		conditions.MarkFalse(obj, meta.ReadyCondition, o.Reason, "%s", o.Message)
		conditions.Delete(obj, meta.ReconcilingCondition)
		conditions.Delete(obj, meta.StalledCondition)
	}
}

// StatusObject is an object with conditions.
type StatusObject interface {
	client.Object
	conditions.Setter
}

// Finish is every reconciler's exit: conditions from the outcome, a Warning event when something
// is wrong, and one patch (skipped by the patcher when nothing changed). A generation counts as
// observed unless it is being retried. owned adds conditions beyond Ready/Reconciling/Stalled.
func Finish(ctx context.Context, patcher *patch.SerialPatcher, obj StatusObject, o Outcome, rec record.EventRecorder, fieldManager string, owned ...string) error {
	SetConditions(obj, o)
	if o.Kind == Stalled || o.Kind == Retrying || o.Kind == Failed {
		rec.Event(obj, corev1.EventTypeWarning, o.Reason, o.Message)
	}
	opts := []patch.Option{patch.WithOwnedConditions{Conditions: append(append([]string{}, Owned...), owned...)}, patch.WithFieldOwner(fieldManager)}
	if o.Kind != Retrying {
		opts = append(opts, patch.WithStatusObservedGeneration{})
	}
	if err := patcher.Patch(ctx, obj, opts...); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// Jitter spreads periodic work over ±10 % so that many objects do not wake together.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/10 + rand.N(d/5+1)
}
