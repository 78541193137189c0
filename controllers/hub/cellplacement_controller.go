package hub

import (
	"context"
	"time"

	"github.com/fluxcd/pkg/runtime/patch"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/status"
)

// CellPlacementReconciler resolves a placement and shows the result in its status.
type CellPlacementReconciler struct {
	client.Client
	Recorder record.EventRecorder
	Resync   time.Duration
}

// +kubebuilder:rbac:groups=hub.cellsync.io,resources=cellplacements,verbs=list;watch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=cellplacements/status,verbs=patch

// Reconcile resolves one placement.
func (r *CellPlacementReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	pl := &hubv1alpha1.CellPlacement{}
	if err := r.Get(ctx, req.NamespacedName, pl); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patcher := patch.NewSerialPatcher(pl, r.Client)
	var out outcome.Outcome
	defer func() {
		if err := outcome.Finish(ctx, patcher, pl, out, r.Recorder, FieldManager); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	if !pl.DeletionTimestamp.IsZero() {
		out = outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonDeleting, Message: "Deleting"}
		return ctrl.Result{}, nil
	}
	_, res, err := resolvePlacement(ctx, r.Client, pl)
	if err != nil {
		out, result, retErr = status.Fail(err, r.Resync)
		if out.Kind == outcome.Stalled {
			pl.Status.ResolvedCells, pl.Status.CellCount = nil, 0
		}
		return result, retErr
	}
	out = status.Placement(pl, res)
	return ctrl.Result{RequeueAfter: outcome.Jitter(r.Resync)}, nil
}

// SetupWithManager registers the reconciler; any cell change re-resolves every placement.
func (r *CellPlacementReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&hubv1alpha1.CellPlacement{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&hubv1alpha1.Cell{}, handler.EnqueueRequestsFromMapFunc(r.allPlacements),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Named("cellplacement").
		Complete(r)
}

func (r *CellPlacementReconciler) allPlacements(ctx context.Context, _ client.Object) []reconcile.Request {
	list := &hubv1alpha1.CellPlacementList{}
	if err := r.List(ctx, list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list placements")
		return nil
	}
	return requestsOf(list.Items)
}
