package hub

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/fluxcd/pkg/runtime/patch"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/intake"
	"github.com/cellsync/cellsync/hub/status"
)

// rolloutRefIndex indexes RolloutSteps by the Rollout they name.
const rolloutRefIndex = ".spec.rolloutRef.name"

// RolloutReconciler drives each Rollout. For an all-at-once app it only reports where the
// revision stands. For a canary app it owns the app's files in the placed cells' branches: it
// renders each step into the step's cells, judges the step's gate from the agents' reports,
// takes RolloutSteps in creation order, advances, pauses, promotes, aborts and undoes.
type RolloutReconciler struct {
	client.Client
	// APIReader reads Rollouts and RolloutSteps past the cache: a step acted on, or a status
	// written, a moment ago must not be read back stale and acted on twice.
	APIReader client.Reader
	Store     *gitstore.Store
	Recorder  record.EventRecorder
	// Reports holds the agents' last reports; Events names rollouts whose reports changed.
	Reports    *intake.Reports
	Events     <-chan event.GenericEvent
	StaleAfter time.Duration
	// Resync re-renders a completed canary app this often, like the ServerlessApp resync.
	Resync time.Duration
	// ReapplyEvery bounds how often an in-progress step is rendered again (to pick up a branch
	// head that moved for another app); 0 means 10 s.
	ReapplyEvery time.Duration
	// Clock is the time steps are judged, baked and recorded at; the real clock when nil.
	Clock clock.PassiveClock

	mu sync.Mutex
	// applied marks each rollout's last step render, for the re-apply throttle; rendered its
	// last plain render or sweep, skipped while nothing it depends on changed.
	applied, rendered map[types.NamespacedName]renderMark
}

// +kubebuilder:rbac:groups=hub.cellsync.io,resources=rollouts,verbs=get;list;watch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=rollouts/status,verbs=patch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=rolloutsteps,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=rolloutsteps/status,verbs=patch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=serverlessapps,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=cellplacements;cells,verbs=list;watch

// Reconcile moves one Rollout: it gathers the facts, the engine (rollout.Decide) plans the
// next state, and the execution carries the plan out.
func (r *RolloutReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	ro := &hubv1alpha1.Rollout{}
	if err := r.reader().Get(ctx, req.NamespacedName, ro); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.refuseOrphans(ctx, req.NamespacedName)
		}
		return ctrl.Result{}, err
	}
	// A rollout acts on its own last status and on RolloutSteps: both are read past the cache,
	// so that a status written a moment ago is not read back stale and acted on twice.
	app := &hubv1alpha1.ServerlessApp{}
	appErr := r.reader().Get(ctx, client.ObjectKey{Namespace: ro.Namespace, Name: ro.Spec.AppRef.Name}, app)
	patcher := patch.NewSerialPatcher(ro, r.Client)
	var out outcome.Outcome
	defer func() {
		if err := outcome.Finish(ctx, patcher, ro, out, r.Recorder, FieldManager); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	switch {
	case appErr != nil:
		out = outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonProgressing, Message: fmt.Sprintf("ServerlessApp %q: %v", ro.Spec.AppRef.Name, client.IgnoreNotFound(appErr))}
		return ctrl.Result{}, client.IgnoreNotFound(appErr)
	case !app.DeletionTimestamp.IsZero():
		out = outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonDeleting, Message: "The app is being deleted"}
		return ctrl.Result{}, nil
	case app.Spec.Suspend:
		out = status.Suspended("Rendering is suspended; cell branches keep what they have")
		return ctrl.Result{}, nil
	}
	steps, err := r.stepsOf(ctx, ro.Namespace, ro.Name)
	if err != nil {
		out = outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonProgressing, Message: err.Error()}
		return ctrl.Result{}, err
	}
	// Steps acted on record their outcome in place, so the list stays current for pruning.
	defer r.pruneSteps(ctx, steps)
	x := &execution{r: r, ro: ro, app: app, steps: steps}
	out, result, retErr = x.run(ctx)
	return result, retErr
}

// keepFinishedSteps is how many finished RolloutSteps a rollout keeps, newest first.
const keepFinishedSteps = 20

// pruneSteps deletes a rollout's oldest finished RolloutSteps beyond keepFinishedSteps; steps
// is the rollout's list in creation order.
func (r *RolloutReconciler) pruneSteps(ctx context.Context, steps []*hubv1alpha1.RolloutStep) {
	var finished []*hubv1alpha1.RolloutStep
	for _, s := range steps {
		switch s.Status.Phase {
		case hubv1alpha1.StepSucceeded, hubv1alpha1.StepRefused, hubv1alpha1.StepSuperseded:
			finished = append(finished, s)
		}
	}
	for len(finished) > keepFinishedSteps {
		if err := r.Delete(ctx, finished[0]); client.IgnoreNotFound(err) != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Failed to delete an old RolloutStep", "step", finished[0].Name)
		}
		finished = finished[1:]
	}
}

func (r *RolloutReconciler) clock() clock.PassiveClock { return orRealClock(r.Clock) }

// pendingOf keeps the steps not acted on yet.
func pendingOf(steps []*hubv1alpha1.RolloutStep) []*hubv1alpha1.RolloutStep {
	var out []*hubv1alpha1.RolloutStep
	for _, s := range steps {
		if s.Status.Phase == "" || s.Status.Phase == hubv1alpha1.StepPending {
			out = append(out, s)
		}
	}
	return out
}

// stepsOf lists the RolloutSteps that name a rollout, in creation order.
func (r *RolloutReconciler) stepsOf(ctx context.Context, ns, name string) ([]*hubv1alpha1.RolloutStep, error) {
	list := &hubv1alpha1.RolloutStepList{}
	if err := r.List(ctx, list, client.InNamespace(ns), client.MatchingFields{rolloutRefIndex: name}); err != nil {
		return nil, fmt.Errorf("failed to list RolloutSteps: %w", err)
	}
	out := make([]*hubv1alpha1.RolloutStep, 0, len(list.Items))
	for i := range list.Items {
		// The cache finds the rollout's steps; their status is read fresh.
		s := &list.Items[i]
		if r.APIReader != nil && (s.Status.Phase == "" || s.Status.Phase == hubv1alpha1.StepPending) {
			fresh := &hubv1alpha1.RolloutStep{}
			if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(s), fresh); err != nil {
				if apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("failed to read RolloutStep %s: %w", s.Name, err)
			}
			s = fresh
		}
		out = append(out, s)
	}
	sort.SliceStable(out, func(i, j int) bool { return stepBefore(out[i], out[j]) })
	return out, nil
}

// stepBefore orders RolloutSteps by creation, then by name (timestamps have one-second grain).
func stepBefore(a, b *hubv1alpha1.RolloutStep) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

func (r *RolloutReconciler) reader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

// refuseOrphans refuses the pending RolloutSteps that name a Rollout that does not exist.
func (r *RolloutReconciler) refuseOrphans(ctx context.Context, key types.NamespacedName) error {
	steps, err := r.stepsOf(ctx, key.Namespace, key.Name)
	if err != nil {
		return err
	}
	for _, s := range steps {
		if s.Status.Phase == "" || s.Status.Phase == hubv1alpha1.StepPending {
			r.refuse(ctx, nil, s, hubv1alpha1.ReasonRolloutNotFound,
				fmt.Sprintf("Rollout %q does not exist in namespace %q (the hub creates one per ServerlessApp, with the app's name)", key.Name, key.Namespace))
		}
	}
	return nil
}

// refuse marks a step Refused with a reason; nothing was written to Git for it.
func (r *RolloutReconciler) refuse(ctx context.Context, ro *hubv1alpha1.Rollout, s *hubv1alpha1.RolloutStep, reason, msg string) {
	r.setStep(ctx, ro, s, hubv1alpha1.StepRefused, reason, msg)
}

// setStep records what came of a step, with conditions and an event on the step (and on its
// rollout when there is one).
func (r *RolloutReconciler) setStep(ctx context.Context, ro *hubv1alpha1.Rollout, s *hubv1alpha1.RolloutStep, phase hubv1alpha1.RolloutStepPhase, reason, msg string, stepIndex ...int32) {
	base := s.DeepCopy()
	s.Status.Phase, s.Status.Message = phase, msg
	if len(stepIndex) > 0 {
		s.Status.StepIndex = stepIndex[0]
	}
	if ro != nil && s.Status.CanaryRevision == "" {
		s.Status.CanaryRevision = ro.Status.CanaryRevision
	}
	outcome.SetConditions(s, status.Step(phase, reason, msg))
	if err := r.Status().Patch(ctx, s, client.MergeFrom(base), client.FieldOwner(FieldManager)); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to record a RolloutStep's outcome", "step", s.Name)
		return
	}
	typ := corev1.EventTypeNormal
	if phase == hubv1alpha1.StepRefused || phase == hubv1alpha1.StepSuperseded {
		typ = corev1.EventTypeWarning
	}
	r.Recorder.Event(s, typ, reason, msg)
	if ro != nil && phase == hubv1alpha1.StepRefused {
		r.Recorder.Eventf(ro, typ, reason, "RolloutStep %s refused: %s", s.Name, msg)
	}
}

// SetupWithManager registers the reconciler: Rollouts, their apps, their RolloutSteps, and the
// reports that mention their apps.
func (r *RolloutReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &hubv1alpha1.RolloutStep{}, rolloutRefIndex,
		func(o client.Object) []string { return []string{o.(*hubv1alpha1.RolloutStep).Spec.RolloutRef.Name} }); err != nil {
		return err
	}
	sameName := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(o)}}
	})
	b := ctrl.NewControllerManagedBy(mgr).
		For(&hubv1alpha1.Rollout{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&hubv1alpha1.ServerlessApp{}, sameName).
		Watches(&hubv1alpha1.RolloutStep{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			s := o.(*hubv1alpha1.RolloutStep)
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Spec.RolloutRef.Name}}}
		}), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&hubv1alpha1.AnalysisTemplate{}, handler.EnqueueRequestsFromMapFunc(r.rolloutsOfNamespace),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// The rollout writes the app's branches: where it is placed decides which. A Rollout has
		// its app's name, so the app's requests are the Rollout's.
		Watches(&hubv1alpha1.CellPlacement{}, handler.EnqueueRequestsFromMapFunc(appsOfPlacement(r.Client)),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&hubv1alpha1.Cell{}, handler.EnqueueRequestsFromMapFunc(allApps(r.Client)),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{})))
	if r.Events != nil {
		b = b.WatchesRawSource(source.Channel(r.Events, &handler.EnqueueRequestForObject{}))
	}
	return b.WithOptions(controller.Options{MaxConcurrentReconciles: workers}).Named("rollout").Complete(r)
}
