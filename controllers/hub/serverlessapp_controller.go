package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/patch"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/cellbranch"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/intake"
	"github.com/cellsync/cellsync/hub/placement"
	"github.com/cellsync/cellsync/hub/render"
	"github.com/cellsync/cellsync/hub/rollout"
	"github.com/cellsync/cellsync/hub/status"
)

// placementRefIndex indexes ServerlessApps by the CellPlacement they reference.
const placementRefIndex = ".spec.placementRef.name"

// ServerlessAppReconciler checks an app, renders it for every cell it is placed on to know what
// each must run, creates its Rollout (which writes the branches), and says how the app stands.
// On deletion it takes the app out of every branch.
type ServerlessAppReconciler struct {
	client.Client
	Store    *gitstore.Store
	Recorder record.EventRecorder
	// Resync re-renders every app this often (jittered), repairing branches changed by hand.
	Resync time.Duration
	// Reports holds the agents' last reports; Events names apps whose reports changed.
	Reports    *intake.Reports
	Events     <-chan event.GenericEvent
	StaleAfter time.Duration
	// Clock tells the time of renders, for the resync; the real clock when nil.
	Clock clock.PassiveClock

	mu       sync.Mutex
	rendered map[types.NamespacedName]renderMark
}

// renderMark remembers the inputs of an app's last successful render, so that a reconcile
// caused by a report (not by a change) skips Git until the resync is due.
type renderMark struct {
	fingerprint string
	at          time.Time
	// desired is the revision rendered for each cell.
	desired map[string]string
	// placed are the branches of the cells a render placed the app on: the next render visits
	// them and the newly placed ones, not the fleet.
	placed []string
}

// +kubebuilder:rbac:groups=hub.cellsync.io,resources=serverlessapps,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=serverlessapps/status,verbs=patch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=serverlessapps/finalizers;rollouts/finalizers,verbs=update
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=rollouts,verbs=get;list;watch;create
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile renders one app.
func (r *ServerlessAppReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	app := &hubv1alpha1.ServerlessApp{}
	if err := r.Get(ctx, req.NamespacedName, app); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patcher := patch.NewSerialPatcher(app, r.Client)
	var out outcome.Outcome
	defer func() {
		if err := outcome.Finish(ctx, patcher, app, out, r.Recorder, FieldManager); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()

	if !app.DeletionTimestamp.IsZero() {
		out, result, retErr = r.finalize(ctx, app)
		return result, retErr
	}
	controllerutil.AddFinalizer(app, hubv1alpha1.Finalizer)
	if v, ok := meta.ReconcileAnnotationValue(app.GetAnnotations()); ok {
		app.Status.SetLastHandledReconcileRequest(v)
	}
	if app.Spec.Suspend {
		out = status.Suspended("Rendering is suspended; cell branches keep what they have")
		return ctrl.Result{}, nil
	}
	out, result, retErr = r.reconcile(ctx, app)
	return result, retErr
}

func (r *ServerlessAppReconciler) reconcile(ctx context.Context, app *hubv1alpha1.ServerlessApp) (outcome.Outcome, ctrl.Result, error) {
	if err := render.ValidateApp(app); err != nil {
		return r.fail(err)
	}
	if err := r.ensureRollout(ctx, app); err != nil {
		return outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonProgressing, Message: err.Error()}, ctrl.Result{}, err
	}
	if s := app.Spec.Strategy; s != nil && s.Type == hubv1alpha1.StrategyCanary && s.Canary == nil {
		return r.fail(&render.InvalidError{Reason: hubv1alpha1.ReasonInvalidStrategy, Message: "spec.strategy.type Canary needs spec.strategy.canary.steps"})
	}
	pl := &hubv1alpha1.CellPlacement{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: app.Spec.PlacementRef.Name}, pl); err != nil {
		if apierrors.IsNotFound(err) {
			return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonPlacementNotFound, Message: fmt.Sprintf("CellPlacement %q not found in namespace %q", app.Spec.PlacementRef.Name, app.Namespace)}, ctrl.Result{}, nil
		}
		return outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonPlacementFailed, Message: err.Error()}, ctrl.Result{}, err
	}
	_, res, err := resolvePlacement(ctx, r.Client, pl)
	if err != nil {
		return r.fail(err)
	}
	canary := app.IsCanary()
	if canary && len(res.Cells) > 0 {
		if err := rollout.Validate(rollout.Steps(app.Spec.Strategy.Canary), res.Cells); err != nil {
			return r.fail(&render.InvalidError{Reason: hubv1alpha1.ReasonInvalidStrategy, Message: err.Error()})
		}
	}
	fp := fingerprint(app, pl, res.Cells)
	if mark, ok := r.unchanged(client.ObjectKeyFromObject(app), fp); ok {
		return r.summarize(ctx, app, res, mark.desired), ctrl.Result{RequeueAfter: outcome.Jitter(r.Resync)}, nil
	}
	// The app's Rollout writes its cell branches (rollout.Decide); the app renders every placed
	// cell only to check it and to know the revision each cell must run, keeping the revision
	// and nothing else of each render.
	desired := make(map[string]string, len(res.Cells))
	for _, c := range res.Cells {
		rc, err := renderCell(app, pl, c)
		if err != nil {
			return r.fail(err)
		}
		desired[c.Name] = rc.app.Revision
	}
	app.Status.Revision = render.AppRevision(app)
	app.Status.CellCount = len(res.Cells)
	app.Status.Cells = status.BoundedNames(res.Names())
	app.Status.SourceCommit = app.Annotations[hubv1alpha1.SourceCommitAnnotation]
	r.remember(client.ObjectKeyFromObject(app), fp, desired)
	return r.summarize(ctx, app, res, desired), ctrl.Result{RequeueAfter: outcome.Jitter(r.Resync)}, nil
}

// summarize judges each placed cell's part of the app at the intake's last poll (which wakes
// the app when a cell's staleness flips) and says how the app stands. A Rollout that cannot
// write the app's branches (Git down, credentials refused, a render it cannot do) says so on
// the app too: that is where people look first.
func (r *ServerlessAppReconciler) summarize(ctx context.Context, app *hubv1alpha1.ServerlessApp, res *placement.Result, desired map[string]string) outcome.Outcome {
	cells := intake.AppCells(app, res.Names(), r.Reports, r.Reports.PolledAt(), r.StaleAfter)
	for i := range cells {
		cells[i].DesiredRevision = desired[cells[i].Cell]
	}
	out := status.App(app, res, cells)
	ro := &hubv1alpha1.Rollout{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(app), ro); err == nil {
		if trouble, ok := status.WriteTrouble(ro.Status.Conditions); ok {
			return trouble
		}
	}
	return out
}

func (r *ServerlessAppReconciler) unchanged(key types.NamespacedName, fp string) (renderMark, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.rendered[key]
	return m, ok && m.fingerprint == fp && r.clock().Since(m.at) < r.Resync
}

func (r *ServerlessAppReconciler) remember(key types.NamespacedName, fp string, desired map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rendered == nil {
		r.rendered = map[types.NamespacedName]renderMark{}
	}
	if fp == "" {
		delete(r.rendered, key)
		return
	}
	r.rendered[key] = renderMark{fingerprint: fp, at: r.clock().Now(), desired: desired}
}

func (r *ServerlessAppReconciler) clock() clock.PassiveClock { return orRealClock(r.Clock) }

// fingerprint hashes everything a render depends on: the app's spec and the annotations that
// change its output or ask for a reconcile, the placement, and the cells it places the app on.
// A cell the placement does not select changes nothing for the app; a cell that leaves the
// placement changes the placed set, and the render then takes the app out of its branch.
func fingerprint(app *hubv1alpha1.ServerlessApp, pl *hubv1alpha1.CellPlacement, placed []*hubv1alpha1.Cell) string {
	type cellInput struct {
		Name   string
		Labels map[string]string
		Spec   hubv1alpha1.CellSpec
	}
	in := struct {
		App         hubv1alpha1.ServerlessAppSpec
		Source      string
		Requested   string
		Placement   hubv1alpha1.CellPlacementSpec
		PlacementNS string
		Cells       int
	}{App: app.Spec, Source: app.Annotations[hubv1alpha1.SourceCommitAnnotation], Requested: app.Annotations[meta.ReconcileRequestAnnotation],
		Placement: pl.Spec, PlacementNS: pl.Namespace, Cells: len(placed)}
	// Encoded straight into the hash, a cell at a time: an app placed on every cell of a large
	// fleet costs no buffer the size of the fleet's Cells.
	h := sha256.New()
	enc := json.NewEncoder(h)
	_ = enc.Encode(in)
	for _, c := range placed {
		_ = enc.Encode(cellInput{Name: c.Name, Labels: c.Labels, Spec: c.Spec})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fail ends a reconcile by the hub's one rule for errors.
func (r *ServerlessAppReconciler) fail(err error) (outcome.Outcome, ctrl.Result, error) {
	return status.Fail(err, r.Resync)
}

// finalize removes the app from every cell branch (and empties its Rollout's cell table), then
// lets the object go.
func (r *ServerlessAppReconciler) finalize(ctx context.Context, app *hubv1alpha1.ServerlessApp) (outcome.Outcome, ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(app, hubv1alpha1.Finalizer) {
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonDeleting, Message: "Deleting"}, ctrl.Result{}, nil
	}
	cells := &hubv1alpha1.CellList{}
	if err := r.List(ctx, cells); err != nil {
		return outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonDeleting, Message: err.Error()}, ctrl.Result{}, err
	}
	key := cellbranch.AppKey{Namespace: app.Namespace, Name: app.Name}
	// The Rollout (named after the app) may have kept a cell table in Git, mid-canary over more
	// cells than its status lists: emptied in the same push.
	table := tableBranch(app.Namespace, app.Name)
	_, err := r.Store.Apply(ctx, gitstore.Update{
		Message:  fmt.Sprintf("Remove %s from every cell", key),
		Branches: append(allBranches(cells.Items), table),
		Prefixes: []string{hubv1alpha1.CellBranchPrefix},
		Edit: func(branch string, files *gitstore.Tree) error {
			if branch == table {
				writeTable(files, nil)
				return nil
			}
			return cellbranch.RemoveApp(files, cellMetaOf(branch, cells.Items), key)
		},
	})
	if err != nil {
		v := status.Classify(err)
		return v.Outcome, ctrl.Result{RequeueAfter: outcome.Jitter(r.Resync)}, nil
	}
	controllerutil.RemoveFinalizer(app, hubv1alpha1.Finalizer)
	r.remember(client.ObjectKeyFromObject(app), "", nil)
	log := ctrl.LoggerFrom(ctx)
	log.Info("Removed app from every cell branch", "app", klog.KObj(app))
	return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonDeleting, Message: "Removed from every cell branch"}, ctrl.Result{}, nil
}

// ensureRollout creates the app's Rollout, owned by the app, when it does not exist yet.
func (r *ServerlessAppReconciler) ensureRollout(ctx context.Context, app *hubv1alpha1.ServerlessApp) error {
	ro := &hubv1alpha1.Rollout{}
	err := r.Get(ctx, client.ObjectKeyFromObject(app), ro)
	if err == nil || !apierrors.IsNotFound(err) {
		return err
	}
	ro = &hubv1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Namespace: app.Namespace, Name: app.Name},
		Spec:       hubv1alpha1.RolloutSpec{AppRef: corev1.LocalObjectReference{Name: app.Name}},
	}
	if err := controllerutil.SetControllerReference(app, ro, r.Scheme()); err != nil {
		return err
	}
	if err := r.Create(ctx, ro, client.FieldOwner(FieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create the app's Rollout: %w", err)
	}
	return nil
}

// renderedCell is one cell's copy of the app, ready for its branch.
type renderedCell struct {
	app  *render.RenderedApp
	meta cellbranch.CellMeta
}

// renderCell renders the app for one cell, with the cell's overrides.
func renderCell(app *hubv1alpha1.ServerlessApp, pl *hubv1alpha1.CellPlacement, cell *hubv1alpha1.Cell) (renderedCell, error) {
	overrides, err := placement.OverridesFor(pl, cell)
	if err != nil {
		return renderedCell{}, err
	}
	ra, err := render.Render(render.Input{App: app, Cell: cell, Overrides: overrides})
	if err != nil {
		return renderedCell{}, err
	}
	return renderedCell{app: ra, meta: cellbranch.CellMeta{Cell: cell.Name, Cluster: cell.Spec.Cluster}}, nil
}

func allBranches(cells []hubv1alpha1.Cell) []string {
	out := make([]string, 0, len(cells))
	for i := range cells {
		out = append(out, cells[i].BranchName())
	}
	return out
}

// cellMetaOf describes the cell behind a branch; a branch whose Cell is gone keeps its name.
func cellMetaOf(branch string, cells []hubv1alpha1.Cell) cellbranch.CellMeta {
	for i := range cells {
		if cells[i].BranchName() == branch {
			return cellbranch.CellMeta{Cell: cells[i].Name, Cluster: cells[i].Spec.Cluster}
		}
	}
	return cellbranch.CellMeta{Cell: strings.TrimPrefix(branch, hubv1alpha1.CellBranchPrefix)}
}

// SetupWithManager registers the reconciler: apps, and the placements and cells they depend on.
func (r *ServerlessAppReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &hubv1alpha1.ServerlessApp{}, placementRefIndex,
		func(o client.Object) []string { return []string{o.(*hubv1alpha1.ServerlessApp).Spec.PlacementRef.Name} }); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&hubv1alpha1.ServerlessApp{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&hubv1alpha1.CellPlacement{}, handler.EnqueueRequestsFromMapFunc(appsOfPlacement(r.Client)),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&hubv1alpha1.Cell{}, handler.EnqueueRequestsFromMapFunc(allApps(r.Client)),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		WatchesRawSource(source.Channel(r.Events, &handler.EnqueueRequestForObject{})).
		// The app shows its Rollout's trouble writing the branches (status.WriteTrouble).
		Owns(&hubv1alpha1.Rollout{}, builder.WithPredicates(writeTroubleChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("serverlessapp").
		Complete(r)
}
