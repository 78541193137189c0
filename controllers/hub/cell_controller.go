package hub

import (
	"context"
	"fmt"

	"github.com/fluxcd/pkg/runtime/patch"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
)

// CellReconciler checks a cell's spec and publishes its branch.
type CellReconciler struct {
	client.Client
	Recorder record.EventRecorder
}

// +kubebuilder:rbac:groups=hub.cellsync.io,resources=cells,verbs=get;list;watch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=cells/status,verbs=get;update;patch

// Reconcile checks one cell.
func (r *CellReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	cell := &hubv1alpha1.Cell{}
	if err := r.Get(ctx, req.NamespacedName, cell); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patcher := patch.NewSerialPatcher(cell, r.Client)
	var out outcome.Outcome
	defer func() {
		if err := outcome.Finish(ctx, patcher, cell, out, r.Recorder, FieldManager); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	cells := &hubv1alpha1.CellList{}
	if err := r.List(ctx, cells); err != nil {
		out = outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonProgressing, Message: err.Error()}
		return ctrl.Result{}, err
	}
	cell.Status.Branch = cell.BranchName()
	out = checkCell(cell, cells.Items)
	if out.Kind == outcome.Stalled {
		return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("%s", out.Message))
	}
	return ctrl.Result{}, nil
}

// checkCell validates what the schema cannot: namespace names and a branch no other cell uses.
func checkCell(cell *hubv1alpha1.Cell, all []hubv1alpha1.Cell) outcome.Outcome {
	for _, ns := range cell.Spec.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return outcome.Outcome{Kind: outcome.Stalled, Reason: hubv1alpha1.ReasonInvalidSpec, Message: fmt.Sprintf("namespace %q is not a valid namespace name", ns)}
		}
	}
	for i := range all {
		o := &all[i]
		if o.Name != cell.Name && o.BranchName() == cell.BranchName() {
			return outcome.Outcome{Kind: outcome.Stalled, Reason: hubv1alpha1.ReasonConflict, Message: fmt.Sprintf("cell %q already uses branch %q; give this cell its own spec.branch", o.Name, cell.BranchName())}
		}
	}
	return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonAccepted, Message: fmt.Sprintf("Cell is registered; its manifests go to branch %s", cell.BranchName())}
}

// SetupWithManager registers the reconciler.
func (r *CellReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&hubv1alpha1.Cell{}).Named("cell").Complete(r)
}
