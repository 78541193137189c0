package hub

import (
	"context"
	"fmt"

	"github.com/fluxcd/pkg/runtime/patch"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
)

// RolloutReconciler keeps each Rollout's status: where the app's current revision stands in its
// cells. It writes only the Rollout's status.
type RolloutReconciler struct {
	client.Client
	Recorder record.EventRecorder
}

// +kubebuilder:rbac:groups=hub.cellsync.io,resources=rollouts,verbs=get;list;watch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=rollouts/status,verbs=get;update;patch

// Reconcile computes one Rollout's status.
func (r *RolloutReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	ro := &hubv1alpha1.Rollout{}
	if err := r.Get(ctx, req.NamespacedName, ro); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patcher := patch.NewSerialPatcher(ro, r.Client)
	var out outcome.Outcome
	defer func() {
		if err := outcome.Finish(ctx, patcher, ro, out, r.Recorder, FieldManager); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	app := &hubv1alpha1.ServerlessApp{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: ro.Namespace, Name: ro.Spec.AppRef.Name}, app); err != nil {
		out = outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonProgressing, Message: fmt.Sprintf("ServerlessApp %q: %v", ro.Spec.AppRef.Name, client.IgnoreNotFound(err))}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ro.Status = allAtOnceStatus(ro.Status, app)
	out = rolloutOutcome(ro, app)
	return ctrl.Result{}, nil
}

// allAtOnceStatus is where an all-at-once rollout stands: one step, the app's revision as canary
// until every cell runs it ready, then recorded as stable.
func allAtOnceStatus(prev hubv1alpha1.RolloutStatus, app *hubv1alpha1.ServerlessApp) hubv1alpha1.RolloutStatus {
	st := hubv1alpha1.RolloutStatus{
		ObservedGeneration: prev.ObservedGeneration,
		Conditions:         prev.Conditions,
		StableRevision:     prev.StableRevision,
		Step:               1,
		Steps:              1,
		StepDisplay:        "1/1",
		TotalCells:         int32(app.Status.CellCount),
	}
	for _, c := range app.Status.CellStatuses {
		rc := hubv1alpha1.RolloutCell{Cell: c.Cell, Revision: c.Revision}
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
		st.Phase, st.StableRevision, st.CanaryRevision, st.CanaryWeight = hubv1alpha1.PhaseCompleted, revision, "", 0
	default:
		st.Phase, st.CanaryRevision, st.CanaryWeight = hubv1alpha1.PhaseProgressing, revision, 100
	}
	st.CellsDisplay = fmt.Sprintf("%d/%d/%d", st.UpdatedCells, st.ReadyCells, st.TotalCells)
	return st
}

func rolloutOutcome(ro *hubv1alpha1.Rollout, app *hubv1alpha1.ServerlessApp) outcome.Outcome {
	st := ro.Status
	if st.Phase == hubv1alpha1.PhaseCompleted {
		return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonRolledOut,
			Message: fmt.Sprintf("Revision %s runs in %d of %d cells, ready in %d", st.StableRevision, st.UpdatedCells, st.TotalCells, st.ReadyCells)}
	}
	return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonProgressing,
		Message: fmt.Sprintf("Rolling out %s: %s cells updated/ready/total", app.Status.Revision, st.CellsDisplay)}
}

// SetupWithManager registers the reconciler: Rollouts, and the apps they follow.
func (r *RolloutReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&hubv1alpha1.Rollout{}).
		Watches(&hubv1alpha1.ServerlessApp{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(o)}}
		})).
		Named("rollout").
		Complete(r)
}
