package hub

import (
	"context"
	"fmt"
	"time"

	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/fluxcd/pkg/runtime/patch"
	corev1 "k8s.io/api/core/v1"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/intake"
	"github.com/cellsync/cellsync/hub/status"
)

// cellBranchIndex indexes Cells by the branch they use.
const cellBranchIndex = "cellBranch"

// CellReconciler checks a cell's spec, publishes its branch, and judges its agent's reports.
type CellReconciler struct {
	client.Client
	Recorder record.EventRecorder
	// Reports holds the agents' last reports; Events names cells whose report changed.
	Reports *intake.Reports
	Events  <-chan event.GenericEvent
	// StaleAfter is how old a heartbeat may be before the cell is Stale.
	StaleAfter time.Duration
	// LeaseNamespace holds the cells' heartbeat Leases (the hub's namespace; none when empty),
	// read through APIReader.
	LeaseNamespace string
	APIReader      client.Reader

	leases heartbeatLeases
}

// +kubebuilder:rbac:groups=hub.cellsync.io,resources=cells,verbs=list;watch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=cells/status,verbs=patch

// Reconcile checks one cell.
func (r *CellReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	cell := &hubv1alpha1.Cell{}
	if err := r.Get(ctx, req.NamespacedName, cell); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patcher := patch.NewSerialPatcher(cell, r.Client)
	var out outcome.Outcome
	defer func() {
		if err := outcome.Finish(ctx, patcher, cell, out, r.Recorder, FieldManager, hubv1alpha1.StaleCondition, hubv1alpha1.ReportTrustedCondition); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	// Only the cells on the same branch, from the cache's index: a heartbeat costs no scan of
	// the fleet.
	cells := &hubv1alpha1.CellList{}
	if err := r.List(ctx, cells, client.MatchingFields{cellBranchIndex: cell.BranchName()}); err != nil {
		out = outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonProgressing, Message: err.Error()}
		return ctrl.Result{}, err
	}
	out = status.CellSpec(cell, cells.Items)
	if out.Kind == outcome.Stalled {
		return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("%s", out.Message))
	}
	// Judged at the intake's last poll, which wakes this cell when its staleness flips.
	entry, ok := r.Reports.Get(cell.Name)
	view := intake.View(entry, ok, r.Reports.PolledAt(), r.StaleAfter)
	out = status.Cell(cell, view)
	r.reportTrust(cell, view)
	if err := r.leases.renew(ctx, cell, view.Seen, r.StaleAfter); err != nil {
		// The heartbeat's age is shown late; the cell's state is right regardless.
		ctrl.LoggerFrom(ctx).Info("Heartbeat Lease not renewed; retrying", "error", err.Error())
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return ctrl.Result{}, nil
}

// reportTrust says whether the cell's reports are signed as its spec.reportKeys demand; an
// untrusted report is ignored by the intake and named here, with a Warning event when it is new.
func (r *CellReconciler) reportTrust(cell *hubv1alpha1.Cell, v intake.CellView) {
	rej, rejected := r.Reports.Rejected(cell.Name)
	switch {
	case rejected:
		if c := conditions.Get(cell, hubv1alpha1.ReportTrustedCondition); c == nil || c.Message != rej.Message {
			r.Recorder.Eventf(cell, corev1.EventTypeWarning, rej.Reason, "%s", rej.Message)
		}
		conditions.MarkFalse(cell, hubv1alpha1.ReportTrustedCondition, rej.Reason, "%s", rej.Message)
	case len(cell.Spec.ReportKeys) > 0 && v.HasReport:
		conditions.MarkTrue(cell, hubv1alpha1.ReportTrustedCondition, hubv1alpha1.ReasonReportVerified, "Reports are signed by a key in spec.reportKeys")
	default:
		conditions.Delete(cell, hubv1alpha1.ReportTrustedCondition)
	}
}

// SetupWithManager registers the reconciler: cells, and cells whose report changed.
func (r *CellReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.leases = heartbeatLeases{client: r.Client, reader: r.APIReader, namespace: r.LeaseNamespace}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &hubv1alpha1.Cell{}, cellBranchIndex, func(o client.Object) []string {
		return []string{o.(*hubv1alpha1.Cell).BranchName()}
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&hubv1alpha1.Cell{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Channel(r.Events, &handler.EnqueueRequestForObject{})).
		Named("cell").
		Complete(r)
}
