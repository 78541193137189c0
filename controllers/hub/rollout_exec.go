package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/rollout"
	"github.com/cellsync/cellsync/hub/status"
)

// maxRounds bounds the decisions of one reconcile: a move is decided, written, and judged again
// at most this often before the reconcile ends and looks again at the next poll.
const maxRounds = 3

// execution is one reconcile of a Rollout: it gathers the facts, asks the engine
// (rollout.Decide) for a plan, and carries the plan out.
type execution struct {
	r     *RolloutReconciler
	ro    *hubv1alpha1.Rollout
	app   *hubv1alpha1.ServerlessApp
	steps []*hubv1alpha1.RolloutStep

	pl     *hubv1alpha1.CellPlacement
	placed []*hubv1alpha1.Cell
	// templates are the checked AnalysisTemplates the strategy names, by name.
	templates map[string]*hubv1alpha1.AnalysisTemplate
	// table is the cell table's files as last read from or written to Git (above
	// rollout.StatusCells cells).
	table map[string][]byte
}

func (x *execution) run(ctx context.Context) (outcome.Outcome, ctrl.Result, error) {
	r := x.r
	// The engine decides over the whole cell table; the status lists its first cells.
	defer shownCells(&x.ro.Status)
	x.pl = &hubv1alpha1.CellPlacement{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: x.app.Namespace, Name: x.app.Spec.PlacementRef.Name}, x.pl); err != nil {
		if apierrors.IsNotFound(err) {
			return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonPlacementNotFound, Message: fmt.Sprintf("CellPlacement %q not found in namespace %q", x.app.Spec.PlacementRef.Name, x.app.Namespace)}, ctrl.Result{}, nil
		}
		return outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonPlacementFailed, Message: err.Error()}, ctrl.Result{}, err
	}
	_, res, err := resolvePlacement(ctx, r.Client, x.pl)
	if err != nil {
		return x.fail(err)
	}
	x.placed = res.Cells
	if err := x.loadTemplates(ctx); err != nil {
		return x.fail(err)
	}
	if err := x.loadTable(ctx); err != nil {
		return x.fail(err)
	}
	in := rollout.Input{App: x.app, Placed: x.placed, Reports: r.Reports, StaleAfter: r.StaleAfter, Now: r.clock().Now(), Poll: r.pollEvery(),
		Reapply: r.reapplyDue(client.ObjectKeyFromObject(x.ro), stepMark(x.app, &x.ro.Status))}
	for _, s := range pendingOf(x.steps) {
		in.Pending = append(in.Pending, rollout.Request{Name: s.Name, Spec: s.Spec})
	}
	if len(x.placed) > 0 && rollout.NeedsHoldings(x.ro.Status, x.app) {
		if in.Holdings, err = x.holdings(ctx); err != nil {
			return x.fail(err)
		}
	}
	for round := 1; ; round++ {
		plan := rollout.Decide(x.ro.Status, in)
		if plan.Err != nil {
			return x.fail(plan.Err)
		}
		if err := x.carryOut(ctx, &plan); err != nil {
			return x.fail(err)
		}
		switch {
		case plan.Again && round < maxRounds:
			in.Pending, in.Holdings, in.Reapply, in.App = nil, nil, false, x.app
		case plan.Again:
			return plan.Outcome, ctrl.Result{RequeueAfter: r.pollEvery()}, nil
		case plan.Resync:
			return plan.Outcome, ctrl.Result{RequeueAfter: outcome.Jitter(r.resync())}, nil
		default:
			return plan.Outcome, ctrl.Result{RequeueAfter: plan.RecheckAfter}, nil
		}
	}
}

// carryOut makes a plan true: the app's template (an undo), the Git write, then the status, the
// RolloutSteps and the events. When the write fails nothing after it happens: the status stays
// as it was and the steps stay pending, to be decided again.
func (x *execution) carryOut(ctx context.Context, plan *rollout.Plan) error {
	if plan.SetTemplate != nil {
		if err := x.r.Patch(ctx, plan.App, client.MergeFrom(x.app), client.FieldOwner(FieldManager)); err != nil {
			return fmt.Errorf("failed to set the app's template back to revision %s: %w", plan.SetTemplate.Revision, err)
		}
		x.app = plan.App
		if plan.Undone != nil {
			x.setStep(ctx, *plan.Undone)
		}
	}
	if plan.Write == rollout.WriteCells {
		w, err := x.writeCells(ctx, &plan.Status)
		if err != nil {
			return err
		}
		rollout.Recorded(&plan.Status, w, x.r.clock().Now())
		x.r.markApplied(client.ObjectKeyFromObject(x.ro), stepMark(x.app, &plan.Status))
	}
	// Every placed cell rendered plainly (WriteAll), or else the app taken out of the cells it
	// left; a rollout that holds writes nothing at all.
	if plan.Held == "" {
		if err := x.renderAll(ctx, plan.Write == rollout.WriteAll); err != nil {
			return err
		}
	}
	if err := x.saveTable(ctx, &plan.Status); err != nil {
		return err
	}
	x.ro.Status = plan.Status
	for _, u := range plan.Steps {
		x.setStep(ctx, u)
	}
	for _, n := range plan.Create {
		if err := x.create(ctx, n); err != nil {
			return err
		}
	}
	for _, e := range plan.Events {
		x.r.Recorder.Event(x.ro, e.Type, e.Reason, e.Message)
	}
	return nil
}

// setStep records a RolloutStep's outcome, on the step the reconcile listed.
func (x *execution) setStep(ctx context.Context, u rollout.StepUpdate) {
	for _, s := range x.steps {
		if s.Name != u.Name {
			continue
		}
		if u.IfApplied && s.Status.Phase != hubv1alpha1.StepApplied {
			return
		}
		var idx []int32
		if u.StepIndex != 0 {
			idx = []int32{u.StepIndex}
		}
		x.r.setStep(ctx, x.ro, s, u.Phase, u.Reason, u.Message, idx...)
		return
	}
}

// create makes the RolloutStep that advances an automatic step, owned by the Rollout.
func (x *execution) create(ctx context.Context, n rollout.NewStep) error {
	s := &hubv1alpha1.RolloutStep{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: x.ro.Namespace,
			Name:      n.Name,
			Labels:    map[string]string{hubv1alpha1.LabelRollout: x.ro.Name, hubv1alpha1.LabelCreatedBy: "hub"},
		},
		Spec: n.Spec,
	}
	if err := controllerutil.SetControllerReference(x.ro, s, x.r.Scheme()); err != nil {
		return err
	}
	if err := x.r.Create(ctx, s, client.FieldOwner(FieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create RolloutStep %s: %w", s.Name, err)
	}
	return nil
}

// fail sorts an error by the hub's one rule (status.Classify, status.Requeue); an app being
// deleted is not a failure.
func (x *execution) fail(err error) (outcome.Outcome, ctrl.Result, error) {
	if errors.Is(err, errAppDeleting) {
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonDeleting, Message: "The app is being deleted"}, ctrl.Result{}, nil
	}
	return status.Fail(err, x.r.resync())
}

func (r *RolloutReconciler) resync() time.Duration {
	if r.Resync <= 0 {
		return 10 * time.Minute
	}
	return r.Resync
}

// pollEvery is how often an in-progress step is judged again without a new report: heartbeats
// age and failure thresholds pass with no event.
func (r *RolloutReconciler) pollEvery() time.Duration {
	d := r.StaleAfter / 4
	if d <= 0 || d > 5*time.Second {
		d = 5 * time.Second
	}
	return d
}

// event is a Normal event on the object.
func (r *RolloutReconciler) event(obj client.Object, reason, format string, args ...any) {
	r.Recorder.Eventf(obj, corev1.EventTypeNormal, reason, format, args...)
}
