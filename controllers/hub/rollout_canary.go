package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/yaml"

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

// MaxRolloutCells bounds a canary placement, so that the Rollout status can keep every touched
// cell's last-known-good commit.
const MaxRolloutCells = 1000

// lkgNone is the last-known-good of a branch that did not exist: an abort removes the app.
const lkgNone = "none"

// canary is one reconcile of a canary rollout.
type canary struct {
	r   *RolloutReconciler
	ro  *hubv1alpha1.Rollout
	app *hubv1alpha1.ServerlessApp
	now time.Time

	pl     *hubv1alpha1.CellPlacement
	placed []*hubv1alpha1.Cell
	steps  []rollout.Step
	rev    string
	// held says why the rollout holds without writing (its state was lost mid-canary).
	held string
	// templates are the checked AnalysisTemplates the strategy names, by name.
	templates map[string]*hubv1alpha1.AnalysisTemplate
}

func (c *canary) reconcile(ctx context.Context, pending []*hubv1alpha1.RolloutStep) (outcome.Outcome, ctrl.Result, error) {
	st := &c.ro.Status
	strategy := c.app.Spec.Strategy.Canary
	st.Steps = int32(len(strategy.Steps))
	c.pl = &hubv1alpha1.CellPlacement{}
	if err := c.r.Get(ctx, client.ObjectKey{Namespace: c.app.Namespace, Name: c.app.Spec.PlacementRef.Name}, c.pl); err != nil {
		if apierrors.IsNotFound(err) {
			return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonPlacementNotFound, Message: fmt.Sprintf("CellPlacement %q not found in namespace %q", c.app.Spec.PlacementRef.Name, c.app.Namespace)}, ctrl.Result{}, nil
		}
		return outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonPlacementFailed, Message: err.Error()}, ctrl.Result{}, err
	}
	_, res, err := resolvePlacement(ctx, c.r.Client, c.pl)
	if err != nil {
		return c.fail(err)
	}
	c.placed = res.Cells
	if len(c.placed) == 0 {
		c.summarize()
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonNoCells, Message: "The placement resolves no cells yet"}, ctrl.Result{}, nil
	}
	if len(c.placed) > MaxRolloutCells {
		return c.fail(&rollout.Error{Message: fmt.Sprintf("a canary rollout covers at most %d cells; the placement has %d (use AllAtOnce or split the placement)", MaxRolloutCells, len(c.placed))})
	}
	c.forgetUnplaced()
	c.steps = rollout.Steps(strategy)
	if err := rollout.Validate(c.steps, c.placed); err != nil {
		return c.fail(err)
	}
	if err := c.loadTemplates(ctx); err != nil {
		return c.fail(err)
	}
	c.rev = render.AppRevision(c.app)

	if c.needsStart() {
		if err := c.start(ctx); err != nil {
			return c.fail(err)
		}
	}
	for _, s := range pending {
		if err := c.take(ctx, s); err != nil {
			return c.fail(err)
		}
	}
	if c.held != "" && c.ro.Status.Step == 0 {
		c.summarize()
		return status.CanaryAtRest(c.ro.Status, c.held), ctrl.Result{RequeueAfter: c.r.pollEvery()}, nil
	}
	out, result, err := c.progress(ctx)
	c.summarize()
	return out, result, err
}

// forgetUnplaced drops the rollout's hold on cells the placement no longer selects: the
// ServerlessApp controller takes the app out of them, and an abort must not put it back.
func (c *canary) forgetUnplaced() {
	placed := map[string]bool{}
	for _, cell := range c.placed {
		placed[cell.Name] = true
	}
	for i := range c.ro.Status.Cells {
		e := &c.ro.Status.Cells[i]
		if !placed[e.Cell] {
			e.Canary, e.Weight, e.LastKnownGood, e.StableRevision, e.ExpectedCommit, e.ExpectedSince = false, 0, "", "", "", nil
		}
	}
}

// fail sorts an error by the hub's one rule (status.Classify, status.Requeue); an app being
// deleted is not a failure.
func (c *canary) fail(err error) (outcome.Outcome, ctrl.Result, error) {
	if errors.Is(err, errAppDeleting) {
		return outcome.Outcome{Kind: outcome.Waiting, Reason: hubv1alpha1.ReasonDeleting, Message: "The app is being deleted"}, ctrl.Result{}, nil
	}
	return status.Fail(err, c.r.resync())
}

func (r *RolloutReconciler) resync() time.Duration {
	if r.Resync <= 0 {
		return 10 * time.Minute
	}
	return r.Resync
}

func active(p hubv1alpha1.RolloutPhase) bool {
	return p == hubv1alpha1.PhaseProgressing || p == hubv1alpha1.PhasePaused
}

// needsStart says whether the app's revision is new to the rollout.
func (c *canary) needsStart() bool {
	st := &c.ro.Status
	switch {
	case active(st.Phase):
		return st.CanaryRevision != c.rev || len(c.canaryCells()) == 0
	case st.Phase == hubv1alpha1.PhaseAborted:
		return st.CanaryRevision != c.rev
	default:
		return st.StableRevision != c.rev
	}
}

// start begins a rollout of the app's revision at step 1. A first deploy (no revision ever
// completed and nothing touched) goes straight to the last step: there is nothing to compare a
// canary with. A rollout still in progress is superseded: its touched cells keep their
// last-known-good commits, and those outside the new first step go back to them.
func (c *canary) start(ctx context.Context) error {
	st := &c.ro.Status
	first := st.StableRevision == "" && !c.anyTouched()
	if first {
		// No state on this hub: a new Rollout, or a hub rebuilt on an empty etcd. The cell
		// branches say whether this really is the app's first deploy.
		held, isFirst, err := c.recover(ctx)
		if err != nil {
			return err
		}
		if held != "" {
			c.held = held
			st.CanaryRevision, st.Phase, st.Paused, st.Step, st.Message = c.rev, hubv1alpha1.PhasePaused, true, 0, held
			return nil
		}
		first = isFirst
	}
	if active(st.Phase) && st.CanaryRevision != "" && st.CanaryRevision != c.rev {
		st.SupersededRevision = st.CanaryRevision
		c.r.Recorder.Eventf(c.ro, corev1.EventTypeNormal, hubv1alpha1.ReasonSuperseded,
			"Revision %s supersedes %s at step %d/%d; cells that ran %s go back to their stable revision unless the new first step covers them", c.rev, st.CanaryRevision, st.Step, st.Steps, st.CanaryRevision)
		c.markCurrent(ctx, hubv1alpha1.StepSuperseded, hubv1alpha1.ReasonSuperseded, fmt.Sprintf("Superseded by revision %s", c.rev))
	}
	for i := range st.Cells {
		st.Cells[i].Canary, st.Cells[i].Weight, st.Cells[i].ExpectedCommit, st.Cells[i].ExpectedSince, st.Cells[i].Analysis = false, 0, "", nil, nil
	}
	st.CanaryRevision, st.Phase, st.Message, st.Step, st.Analysis, st.AnalysisAttempt = c.rev, hubv1alpha1.PhaseProgressing, "", 0, "", 0
	target := int32(1)
	if first {
		target = int32(len(c.steps))
	}
	mask, weight, err := c.stepMask(target, nil, nil)
	if err != nil {
		return err
	}
	return c.moveTo(ctx, target, mask, weight, "")
}

// recover reads the app's record in every placed cell's branch when the rollout has no state.
// No cell has the app: its first deploy (straight to the last step). Every cell runs the app's
// revision plainly: the last step, re-rendered byte for byte and judged by its gate. Every cell
// that has the app runs one other revision plainly: a canary from step 1, as always. Anything
// else is a canary in flight whose steps and last-known-good commits this hub never saw: it
// holds, writing nothing, with a message that says what the branches hold and what to do.
func (c *canary) recover(ctx context.Context) (held string, first bool, err error) {
	key := cellbranch.AppKey{Namespace: c.app.Namespace, Name: c.app.Name}
	placed := map[string]*hubv1alpha1.Cell{}
	for _, cell := range c.placed {
		placed[cell.BranchName()] = cell
	}
	// One listing per file path across the placed branches, not one per cell.
	notPlaced := func(branch, _ string) bool { return placed[branch] == nil }
	metas, err := c.r.Store.ReadFiles(ctx, hubv1alpha1.CellBranchPrefix, cellbranch.AppMetaPath(key), notPlaced)
	if err != nil {
		return "", false, err
	}
	revision := map[string]string{}  // branch → the app's revision there
	wanting := map[string][]string{} // rendered file → the branches that hold it
	for branch, f := range metas {
		m := &cellbranch.AppMeta{}
		if err := yaml.Unmarshal(f.Content, m); err != nil {
			return "", false, fmt.Errorf("cannot read %s in branch %s: %w", cellbranch.AppMetaPath(key), branch, err)
		}
		revision[branch] = m.Revision
		for _, p := range m.Files {
			wanting[p] = append(wanting[p], branch)
		}
	}
	split := map[string]bool{} // branch → its Knative Service splits traffic (a canary step)
	for p, branches := range wanting {
		files, err := c.r.Store.ReadFiles(ctx, hubv1alpha1.CellBranchPrefix, p, func(b, _ string) bool { return !slices.Contains(branches, b) })
		if err != nil {
			return "", false, err
		}
		for branch, f := range files {
			s, err := render.HasSplit(f.Content)
			if err != nil {
				return "", false, fmt.Errorf("cannot read %s in branch %s: %w", p, branch, err)
			}
			split[branch] = split[branch] || s
		}
	}
	// What each cell holds: a revision, plain or split.
	type holding struct {
		revision string
		split    bool
	}
	cells := map[holding][]string{}
	for branch, rev := range revision {
		h := holding{rev, split[branch]}
		cells[h] = append(cells[h], placed[branch].Name)
	}
	if len(cells) == 0 {
		return "", true, nil // the app's first deploy
	}
	if len(cells) == 1 {
		for h, in := range cells {
			switch {
			case h.split:
			case h.revision == c.rev && len(in) == len(c.placed):
				return "", true, nil // the last step, re-rendered as it is
			case h.revision != c.rev:
				return "", false, nil // an ordinary canary against that revision
			}
		}
	}
	var parts []string
	for h, in := range cells {
		sort.Strings(in)
		what := h.revision
		if h.split {
			what += " with a traffic split"
		}
		parts = append(parts, fmt.Sprintf("%s in %s", what, strings.Join(in, ", ")))
	}
	sort.Strings(parts)
	return fmt.Sprintf("This hub has no state for the rollout of %s, and the cell branches hold a canary in flight (%s), likely from a hub that was lost: "+
		"holding, nothing is written. To finish the rollout: kubectl cells promote %s --full; to go back, push the previous spec to the source branch, then promote it with --full",
		c.rev, strings.Join(parts, "; "), c.app.Name), false, nil
}

// take acts on one RolloutStep. It refuses what it cannot do, with a reason and nothing written;
// an error means Git trouble, and the step stays pending for the retry.
func (c *canary) take(ctx context.Context, s *hubv1alpha1.RolloutStep) error {
	st := &c.ro.Status
	refuse := func(reason, format string, args ...any) error {
		c.r.refuse(ctx, c.ro, s, reason, fmt.Sprintf(format, args...))
		return nil
	}
	if s.Spec.Revision != "" && s.Spec.Action != hubv1alpha1.ActionUndo && s.Spec.Revision != st.CanaryRevision {
		return refuse(hubv1alpha1.ReasonInvalidStep, "the step is for revision %s, but the rollout's canary is %s", s.Spec.Revision, orNone(st.CanaryRevision))
	}
	act := s.Spec.Action
	if act != hubv1alpha1.ActionUndo && act != hubv1alpha1.ActionResume && !active(st.Phase) {
		return refuse(hubv1alpha1.ReasonInvalidStep, "nothing to %s: the rollout is %s", strings.ToLower(string(act)), orNone(string(st.Phase)))
	}
	why := ""
	if s.Spec.Reason != "" {
		why = ": " + s.Spec.Reason
	}
	switch act {
	case hubv1alpha1.ActionPause:
		st.Paused = true
		c.r.setStep(ctx, c.ro, s, hubv1alpha1.StepSucceeded, hubv1alpha1.ReasonStepDone, fmt.Sprintf("Paused at step %d/%d", st.Step, st.Steps))
	case hubv1alpha1.ActionResume:
		msg := "Resumed"
		switch {
		case st.Phase == hubv1alpha1.PhasePaused && st.Analysis == hubv1alpha1.AnalysisInconclusive:
			// The step's analysis is rendered again under a new id: the cells measure afresh.
			st.AnalysisAttempt++
			msg = fmt.Sprintf("Resumed: step %d/%d's analysis is measured again", st.Step, st.Steps)
		case !st.Paused:
			msg = "The rollout was not paused; nothing to resume"
		}
		st.Paused = false
		c.r.setStep(ctx, c.ro, s, hubv1alpha1.StepSucceeded, hubv1alpha1.ReasonStepDone, msg)
	case hubv1alpha1.ActionAbort:
		if err := c.abort(ctx, fmt.Sprintf("Aborted by RolloutStep %s%s", s.Name, why)); err != nil {
			return err
		}
		c.r.setStep(ctx, c.ro, s, hubv1alpha1.StepSucceeded, hubv1alpha1.ReasonAborted, "Every touched cell is back at its last-known-good commit")
	case hubv1alpha1.ActionAdvance, hubv1alpha1.ActionPromote:
		target := int32(len(c.steps))
		var cells *hubv1alpha1.StepCells
		var weight *int32
		if act == hubv1alpha1.ActionAdvance {
			if st.StepCompletedAt == nil {
				return refuse(hubv1alpha1.ReasonStepConflict, "step %d/%d (%s) is still in progress: %s. Wait for it, promote with --full to skip the gates, or abort",
					st.Step, st.Steps, orNone(st.CurrentStep), orNone(st.Message))
			}
			target = st.Step + 1
			if s.Spec.Step != nil {
				target = *s.Spec.Step
			}
			if target <= st.Step || target > int32(len(c.steps)) {
				return refuse(hubv1alpha1.ReasonInvalidStep, "cannot advance from step %d to step %d of %d", st.Step, target, len(c.steps))
			}
			cells, weight = s.Spec.Cells, s.Spec.Weight
		}
		mask, w, err := c.stepMask(target, cells, weight)
		if err != nil {
			return refuse(hubv1alpha1.ReasonInvalidStep, "%s", err.Error())
		}
		if err := c.moveTo(ctx, target, mask, w, s.Name); err != nil {
			var inv *render.InvalidError
			if errors.As(err, &inv) {
				return refuse(hubv1alpha1.ReasonInvalidStep, "%s", inv.Message)
			}
			return err
		}
		c.r.setStep(ctx, c.ro, s, hubv1alpha1.StepApplied, hubv1alpha1.ReasonStepApplied,
			fmt.Sprintf("Step %d/%d: %s at %d%% in %s%s", target, len(c.steps), c.rev, w, strings.Join(mask, ", "), why), target)
	case hubv1alpha1.ActionUndo:
		return c.undo(ctx, s)
	default:
		return refuse(hubv1alpha1.ReasonInvalidStep, "unknown action %q", act)
	}
	return nil
}

// stepMask is the cells and weight of a strategy step, with a RolloutStep's overrides. The mask
// must stay inside the placement and keep every cell the rollout already updated, and the last
// step must cover every cell at 100 %.
func (c *canary) stepMask(target int32, cells *hubv1alpha1.StepCells, weight *int32) ([]string, int32, error) {
	step := c.steps[target-1]
	sel, w := step.Cells, step.Weight
	if cells != nil {
		sel = rollout.Selection(*cells)
	}
	if weight != nil {
		w = *weight
	}
	if w < 0 || w > 100 {
		return nil, 0, &rollout.Error{Message: fmt.Sprintf("traffic weight %d is not between 0 and 100", w)}
	}
	mask, err := rollout.Mask(sel, c.placed)
	if err != nil {
		return nil, 0, err
	}
	if len(mask) == 0 {
		return nil, 0, &rollout.Error{Message: "the step selects no cells"}
	}
	in := map[string]bool{}
	for _, n := range mask {
		in[n] = true
	}
	for _, n := range c.canaryCells() {
		if !in[n] {
			return nil, 0, &rollout.Error{Message: fmt.Sprintf("the step drops cell %s, which already runs the canary; masks may only grow", n)}
		}
	}
	if int(target) == len(c.steps) && (len(mask) != len(c.placed) || w != 100) {
		return nil, 0, &rollout.Error{Message: fmt.Sprintf("the last step must send 100%% of the traffic in every placed cell (this one has %d%% in %d of %d cells)", w, len(mask), len(c.placed))}
	}
	return mask, w, nil
}

// moveTo makes target the current step and renders it; on error the status is left as it was.
func (c *canary) moveTo(ctx context.Context, target int32, mask []string, weight int32, stepName string) error {
	st := &c.ro.Status
	saved := st.DeepCopy()
	if st.CurrentStep != "" && st.StepCompletedAt == nil && st.CurrentStep != stepName {
		defer func(prev string) {
			if st.CurrentStep != prev {
				c.markStep(ctx, prev, hubv1alpha1.StepSuperseded, hubv1alpha1.ReasonSuperseded, fmt.Sprintf("Replaced by step %d/%d before it completed", target, len(c.steps)))
			}
		}(st.CurrentStep)
	}
	for _, n := range mask {
		e := c.cell(n)
		e.Canary, e.Weight = true, weight
	}
	st.Step, st.CanaryWeight, st.StepCompletedAt, st.Paused, st.CurrentStep, st.SkippedCells = target, weight, nil, false, stepName, nil
	st.Phase = hubv1alpha1.PhaseProgressing
	if err := c.apply(ctx); err != nil {
		*st = *saved
		return err
	}
	return nil
}

// final is true when the current step is the last: every placed cell at 100 %, rendered plainly
// (no split, no tags), byte for byte what an all-at-once render writes.
func (c *canary) final() bool {
	return int(c.ro.Status.Step) == len(c.steps)
}

// apply renders the current step: the canary cells get the canary revision with the step's
// traffic split; touched cells outside the mask get their last-known-good tree back; no other
// branch is visited, so it keeps its bytes. All of it is one atomic push.
func (c *canary) apply(ctx context.Context) error {
	st := &c.ro.Status
	byName := map[string]*hubv1alpha1.Cell{}
	for _, cell := range c.placed {
		byName[cell.Name] = cell
	}
	key := cellbranch.AppKey{Namespace: c.app.Namespace, Name: c.app.Name}
	// Every cell the rollout holds is placed (forgetUnplaced runs first).
	entries := map[string]*hubv1alpha1.RolloutCell{}
	restore := map[string]string{}
	var branches []string
	for i := range st.Cells {
		e := &st.Cells[i]
		if !e.Canary && e.LastKnownGood == "" {
			continue
		}
		branch := byName[e.Cell].BranchName()
		entries[branch] = e
		branches = append(branches, branch)
		if !e.Canary && e.LastKnownGood != lkgNone {
			restore[branch] = e.LastKnownGood
		}
	}
	if len(branches) == 0 {
		return nil
	}
	final := c.final()
	sourceCommit := c.app.Annotations[hubv1alpha1.SourceCommitAnnotation]
	stableSeen := map[string]string{}
	analysisIDs := map[string]string{}
	msg := fmt.Sprintf("Rollout %s/%s: step %d/%d, %s at %d%%", c.app.Namespace, c.app.Name, st.Step, st.Steps, c.rev, st.CanaryWeight)
	if len(c.canaryCells()) == 0 {
		msg = fmt.Sprintf("Rollout %s/%s: back to the last-known-good commits", c.app.Namespace, c.app.Name)
	}
	res, err := c.r.Store.Apply(ctx, gitstore.Update{
		Message:  msg,
		Branches: branches,
		Restore:  restore,
		Edit: func(branch string, files *gitstore.Tree) error {
			if err := c.guard(ctx, branch == branches[0]); err != nil {
				return err
			}
			e := entries[branch]
			cell := byName[e.Cell]
			meta := cellbranch.CellMeta{Cell: cell.Name, Cluster: cell.Spec.Cluster}
			if !e.Canary {
				if e.LastKnownGood == lkgNone {
					return cellbranch.RemoveApp(files, meta, key)
				}
				return nil
			}
			stable := e.StableRevision
			if e.LastKnownGood == "" {
				m, err := cellbranch.ReadAppMeta(files, key)
				if err != nil {
					return err
				}
				stable = ""
				if m != nil {
					stable = m.Revision
				}
				stableSeen[e.Cell] = stable
			}
			overrides, err := placement.OverridesFor(c.pl, cell)
			if err != nil {
				return err
			}
			in := render.Input{App: c.app, Cell: cell, Overrides: overrides}
			if !final {
				in.Split = &render.TrafficSplit{StableRevision: stable, CanaryPercent: int64(e.Weight)}
			}
			ra, err := render.Render(in)
			if err != nil {
				return err
			}
			if err := cellbranch.PutApp(files, meta, key, ra, sourceCommit); err != nil {
				return err
			}
			an, err := c.renderAnalysis(cell, ra.TargetNamespace, ra.Revision, stable)
			if err != nil || an == nil {
				return err
			}
			analysisIDs[e.Cell] = an.ID
			return cellbranch.PutAnalysis(files, key, an)
		},
	})
	if err != nil {
		return err
	}
	for _, e := range entries {
		switch id := analysisIDs[e.Cell]; {
		case !e.Canary:
			// A cell put back keeps the analysis that judged it, for people to read.
		case id == "":
			e.Analysis = nil
		case e.Analysis == nil || e.Analysis.ID != id:
			e.Analysis = &hubv1alpha1.CellAnalysis{ID: id, Phase: hubv1alpha1.AnalysisRunning}
		}
	}
	now := metav1.NewTime(c.now)
	for branch, e := range entries {
		if !e.Canary {
			e.LastKnownGood, e.StableRevision, e.ExpectedCommit, e.ExpectedSince, e.Weight = "", "", "", nil, 0
			continue
		}
		if e.LastKnownGood == "" {
			e.LastKnownGood = res.Before[branch]
			if e.LastKnownGood == "" {
				e.LastKnownGood = lkgNone
			}
			e.StableRevision = stableSeen[e.Cell]
		}
		if head := res.Heads[branch]; head != e.ExpectedCommit {
			e.ExpectedCommit, e.ExpectedSince = head, &now
		}
	}
	c.r.markApplied(client.ObjectKeyFromObject(c.ro), c.stepMark())
	if len(res.Commits) > 0 {
		c.r.Recorder.Eventf(c.ro, corev1.EventTypeNormal, hubv1alpha1.ReasonStepApplied, "%s: committed to %d cell branches", msg, len(res.Commits))
	}
	return nil
}

// errAppDeleting abandons a render: the app is being deleted and its finalizer takes its files
// out of every branch.
var errAppDeleting = errors.New("the app is being deleted")

// guard runs inside the Git store's lock, before the first branch of an update is edited: a
// render never lands after the app's finalizer removed its files.
func (c *canary) guard(ctx context.Context, first bool) error {
	if !first {
		return nil
	}
	app := &hubv1alpha1.ServerlessApp{}
	err := c.r.reader().Get(ctx, client.ObjectKeyFromObject(c.app), app)
	switch {
	case apierrors.IsNotFound(err):
		return errAppDeleting
	case err != nil:
		return err
	case !app.DeletionTimestamp.IsZero():
		return errAppDeleting
	}
	return nil
}

// abort puts every touched cell back at its last-known-good tree in one push.
func (c *canary) abort(ctx context.Context, reason string) error {
	st := &c.ro.Status
	saved := st.DeepCopy()
	for i := range st.Cells {
		st.Cells[i].Canary = false
	}
	if err := c.apply(ctx); err != nil {
		*st = *saved
		return err
	}
	c.markCurrent(ctx, hubv1alpha1.StepSuperseded, hubv1alpha1.ReasonAborted, reason)
	st.Phase, st.Message, st.CanaryWeight, st.Paused, st.StepCompletedAt = hubv1alpha1.PhaseAborted, reason, 0, false, nil
	c.r.Recorder.Eventf(c.ro, corev1.EventTypeWarning, hubv1alpha1.ReasonAborted, "Rollout of %s aborted: %s; every touched cell is back at its last-known-good commit", c.rev, reason)
	return nil
}

// undo rolls forward to an earlier revision by setting the app's template back to it; the
// rollout then walks the strategy for it like for any change. A Git-synced app is refused: its
// spec comes from Git, where the revert belongs.
func (c *canary) undo(ctx context.Context, s *hubv1alpha1.RolloutStep) error {
	st := &c.ro.Status
	refuse := func(format string, args ...any) error {
		c.r.refuse(ctx, c.ro, s, hubv1alpha1.ReasonUndoFailed, fmt.Sprintf(format, args...))
		return nil
	}
	if sc := c.app.Annotations[hubv1alpha1.SourceCommitAnnotation]; sc != "" {
		return refuse("ServerlessApp %s is synced from Git (commit %s); revert the change in Git instead, or abort the rollout", c.app.Name, short(sc))
	}
	target := s.Spec.Revision
	if target == "" {
		switch {
		case active(st.Phase) || st.Phase == hubv1alpha1.PhaseAborted:
			target = st.StableRevision
		case len(st.History) >= 2:
			target = st.History[len(st.History)-2].Revision
		}
	}
	if target == "" {
		return refuse("there is no earlier revision to go back to")
	}
	if target == c.rev {
		return refuse("revision %s is already the app's revision", target)
	}
	var rec *hubv1alpha1.RevisionRecord
	known := make([]string, 0, len(st.History))
	for i := range st.History {
		known = append(known, st.History[i].Revision)
		if st.History[i].Revision == target {
			rec = &st.History[i]
		}
	}
	if rec == nil {
		return refuse("revision %s is not in the rollout's history (known: %s)", target, orNone(strings.Join(known, ", ")))
	}
	base := c.app.DeepCopy()
	c.app.Spec.Template = *rec.Template.DeepCopy()
	if err := c.r.Patch(ctx, c.app, client.MergeFrom(base), client.FieldOwner(FieldManager)); err != nil {
		return fmt.Errorf("failed to set the app's template back to revision %s: %w", target, err)
	}
	c.r.setStep(ctx, c.ro, s, hubv1alpha1.StepSucceeded, hubv1alpha1.ReasonStepDone,
		fmt.Sprintf("Rolling forward to revision %s: the app's template is set back to it and the rollout walks the strategy again", target))
	c.rev = render.AppRevision(c.app)
	if c.needsStart() {
		return c.start(ctx)
	}
	return nil
}

// progress judges the current step's gate and carries out what status.Canary decides:
// complete, abort, wait (paused, baking, converging), or ask for the next step.
func (c *canary) progress(ctx context.Context) (outcome.Outcome, ctrl.Result, error) {
	st := &c.ro.Status
	switch st.Phase {
	case hubv1alpha1.PhaseCompleted:
		if err := c.ensureRendered(ctx); err != nil {
			return c.fail(err)
		}
		return status.CanaryAtRest(*st, ""), ctrl.Result{RequeueAfter: outcome.Jitter(c.r.resync())}, nil
	case hubv1alpha1.PhaseAborted:
		return status.CanaryAtRest(*st, ""), ctrl.Result{}, nil
	}
	if c.r.reapplyDue(client.ObjectKeyFromObject(c.ro), c.stepMark()) {
		if err := c.apply(ctx); err != nil {
			return c.fail(err)
		}
	}
	strategy := c.app.Spec.Strategy.Canary
	facts := status.CanaryStep{App: c.app.Name, Namespace: c.app.Namespace, Revision: c.rev, Step: st.Step, Steps: st.Steps,
		Gate: c.gate(strategy), Paused: st.Paused, Pause: strategy.Steps[st.Step-1].Pause}
	if st.StepCompletedAt != nil {
		t := st.StepCompletedAt.Time
		facts.PassedAt = &t
	}
	d := status.Canary(facts, c.now, c.r.pollEvery())
	if phase := status.Analyses(st.Cells, facts.Gate); phase != "" {
		st.Analysis = phase
	}
	for i := range st.Cells {
		st.Cells[i].Message = facts.Gate.Notes[st.Cells[i].Cell]
		st.Cells[i].Skipped = false
	}
	if d.Action == status.Abort {
		if err := c.abort(ctx, d.Message); err != nil {
			return c.fail(err)
		}
		return d.Outcome, ctrl.Result{}, nil
	}
	if facts.Gate.Complete {
		st.SkippedCells = facts.Gate.Skipped
		for _, n := range facts.Gate.Skipped {
			c.cell(n).Skipped = true
		}
	}
	if d.FirstPass {
		t := metav1.NewTime(c.now)
		st.StepCompletedAt = &t
		c.markCurrent(ctx, hubv1alpha1.StepSucceeded, hubv1alpha1.ReasonStepComplete, fmt.Sprintf("Step %d/%d complete: %s", st.Step, st.Steps, facts.Gate.Reason))
		c.r.Recorder.Eventf(c.ro, corev1.EventTypeNormal, hubv1alpha1.ReasonStepComplete, "Step %d/%d complete: %s", st.Step, st.Steps, facts.Gate.Reason)
	}
	switch d.Action {
	case status.Complete:
		c.complete()
		return d.Outcome, ctrl.Result{RequeueAfter: outcome.Jitter(c.r.resync())}, nil
	case status.RequestNext:
		if err := c.requestNext(ctx); err != nil {
			return outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonProgressing, Message: err.Error()}, ctrl.Result{}, err
		}
	}
	st.Phase, st.Message = d.Phase, d.Message
	return d.Outcome, ctrl.Result{RequeueAfter: d.RecheckAfter}, nil
}

// gate judges the current step from the masked cells' reports, at the intake's last poll.
func (c *canary) gate(strategy *hubv1alpha1.CanaryStrategy) rollout.Gate {
	var exps []rollout.Expectation
	for _, e := range c.ro.Status.Cells {
		if e.Canary {
			since := c.now
			if e.ExpectedSince != nil {
				since = e.ExpectedSince.Time
			}
			exp := rollout.Expectation{Cell: e.Cell, Commit: e.ExpectedCommit, Since: since}
			if e.Analysis != nil {
				exp.AnalysisID = e.Analysis.ID
			}
			exps = append(exps, exp)
		}
	}
	opts := rollout.Options{StaleAfter: c.r.StaleAfter, Policy: rollout.StaleCellPolicy(strategy.StaleCellPolicy)}
	if strategy.FailureThreshold != nil {
		opts.FailureThreshold = strategy.FailureThreshold.Duration
	}
	return rollout.Judge(c.app.Name, c.app.Namespace, exps, c.r.Reports, c.now, opts)
}

// requestNext creates the RolloutStep that advances an automatic step. Its name is fixed by the
// revision, the app's generation and the step, so a repeated reconcile cannot create two, and a
// later rollout of the same revision (after an undo) gets new ones.
func (c *canary) requestNext(ctx context.Context) error {
	st := &c.ro.Status
	next := st.Step + 1
	s := &hubv1alpha1.RolloutStep{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.ro.Namespace,
			Name:      fmt.Sprintf("%s-%s-g%d-%d", c.ro.Name, revisionSuffix(c.rev), c.app.Generation, next),
			Labels:    map[string]string{hubv1alpha1.LabelRollout: c.ro.Name, hubv1alpha1.LabelCreatedBy: "hub"},
		},
		Spec: hubv1alpha1.RolloutStepSpec{
			RolloutRef: corev1.LocalObjectReference{Name: c.ro.Name},
			Action:     hubv1alpha1.ActionAdvance,
			Step:       &next,
			Revision:   c.rev,
			Reason:     fmt.Sprintf("automatic: step %d passed its gate", st.Step),
		},
	}
	if err := controllerutil.SetControllerReference(c.ro, s, c.r.Scheme()); err != nil {
		return err
	}
	if err := c.r.Create(ctx, s, client.FieldOwner(FieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create RolloutStep %s: %w", s.Name, err)
	}
	return nil
}

// complete records the canary as the stable revision.
func (c *canary) complete() {
	st := &c.ro.Status
	st.History = status.AppendHistory(st.History, c.rev, c.app, c.now)
	st.Phase, st.StableRevision, st.CanaryRevision, st.CanaryWeight = hubv1alpha1.PhaseCompleted, c.rev, "", 0
	st.Message, st.SupersededRevision, st.Paused = fmt.Sprintf("Revision %s runs in every placed cell", c.rev), "", false
	if len(st.SkippedCells) > 0 {
		st.Message += "; skipped stale cells: " + strings.Join(st.SkippedCells, ", ")
	}
	for i := range st.Cells {
		e := &st.Cells[i]
		e.Canary, e.Weight, e.LastKnownGood, e.StableRevision, e.ExpectedCommit, e.ExpectedSince, e.Analysis = false, 0, "", "", "", nil, nil
	}
	c.r.Recorder.Eventf(c.ro, corev1.EventTypeNormal, hubv1alpha1.ReasonRolledOut, "Revision %s is stable in every placed cell", c.rev)
}

// ensureRendered keeps a completed app rendered in every placed cell (a new cell, a changed
// override, a branch edited by hand), skipping Git while nothing it depends on changed.
func (c *canary) ensureRendered(ctx context.Context) error {
	key := client.ObjectKeyFromObject(c.ro)
	fp := "completed/" + fingerprint(c.app, c.pl, c.placed)
	if !c.r.renderDue(key, fp) {
		return nil
	}
	rendered, err := renderCells(c.app, c.pl, &placement.Result{Cells: c.placed})
	if err != nil {
		return err
	}
	appKey := cellbranch.AppKey{Namespace: c.app.Namespace, Name: c.app.Name}
	branches := make([]string, 0, len(rendered))
	for b := range rendered {
		branches = append(branches, b)
	}
	sourceCommit := c.app.Annotations[hubv1alpha1.SourceCommitAnnotation]
	if _, err := c.r.Store.Apply(ctx, gitstore.Update{
		Message:  fmt.Sprintf("Render %s revision %s to %d cells", appKey, c.rev, len(rendered)),
		Branches: branches,
		Edit: func(branch string, files *gitstore.Tree) error {
			if err := c.guard(ctx, branch == branches[0]); err != nil {
				return err
			}
			rc := rendered[branch]
			return cellbranch.PutApp(files, rc.meta, appKey, rc.app, sourceCommit)
		},
	}); err != nil {
		return err
	}
	AppRenders.WithLabelValues(c.app.Namespace, c.app.Name).Inc()
	c.r.markApplied(key, fp)
	return nil
}

// summarize fills each cell's part and the counts from the agents' reports.
func (c *canary) summarize() {
	st := &c.ro.Status
	names := make([]string, 0, len(c.placed))
	placed := map[string]bool{}
	for _, cell := range c.placed {
		names = append(names, cell.Name)
		placed[cell.Name] = true
	}
	desired := map[string]string{}
	for _, s := range c.app.Status.CellStatuses {
		desired[s.Cell] = s.DesiredRevision
	}
	statuses := intake.AppCells(c.app, names, c.r.Reports, c.r.Reports.PolledAt(), c.r.StaleAfter)
	for _, s := range statuses {
		e := c.cell(s.Cell)
		e.Revision, e.Ready = s.Revision, s.Ready
		if rep, ok := c.r.Reports.Get(s.Cell); ok {
			e.AppliedCommit = rep.Report.AppliedCommit
		}
		want := desired[s.Cell]
		if want == "" {
			want = c.rev
		}
		e.Updated = s.Revision != "" && s.Revision == want && (e.Canary || st.Phase == hubv1alpha1.PhaseCompleted)
		if !active(st.Phase) {
			e.Message = ""
		}
		if e.Message == "" && !s.Ready {
			e.Message = s.Message
		}
	}
	kept := st.Cells[:0]
	for _, e := range st.Cells {
		if placed[e.Cell] || e.LastKnownGood != "" {
			kept = append(kept, e)
		}
	}
	st.Cells = kept
	sort.Slice(st.Cells, func(i, j int) bool { return st.Cells[i].Cell < st.Cells[j].Cell })
	if len(st.Cells) > MaxRolloutCells {
		st.Cells = st.Cells[:MaxRolloutCells]
	}
	st.UpdatedCells, st.ReadyCells, st.TotalCells = 0, 0, int32(len(c.placed))
	for _, e := range st.Cells {
		if !placed[e.Cell] {
			continue
		}
		if e.Updated {
			st.UpdatedCells++
		}
		if e.Ready {
			st.ReadyCells++
		}
	}
	st.CellsDisplay = fmt.Sprintf("%d/%d/%d", st.UpdatedCells, st.ReadyCells, st.TotalCells)
	if st.Step > 0 {
		st.StepDisplay = fmt.Sprintf("%d/%d", st.Step, st.Steps)
	}
	if st.Phase == hubv1alpha1.PhaseCompleted {
		st.Step, st.StepDisplay = st.Steps, fmt.Sprintf("%d/%d", st.Steps, st.Steps)
	}
}

// cell returns the status entry of a cell, adding it when missing.
func (c *canary) cell(name string) *hubv1alpha1.RolloutCell {
	st := &c.ro.Status
	for i := range st.Cells {
		if st.Cells[i].Cell == name {
			return &st.Cells[i]
		}
	}
	st.Cells = append(st.Cells, hubv1alpha1.RolloutCell{Cell: name})
	return &st.Cells[len(st.Cells)-1]
}

func (c *canary) canaryCells() []string {
	var out []string
	for _, e := range c.ro.Status.Cells {
		if e.Canary {
			out = append(out, e.Cell)
		}
	}
	return out
}

func (c *canary) anyTouched() bool {
	for _, e := range c.ro.Status.Cells {
		if e.LastKnownGood != "" {
			return true
		}
	}
	return false
}

// stepMark identifies what the current step renders, for the re-apply throttle.
func (c *canary) stepMark() string {
	st := &c.ro.Status
	return fmt.Sprintf("%s/%d/%d/%s/%d/%d", c.rev, c.app.Generation, st.Step, strings.Join(c.canaryCells(), ","), st.CanaryWeight, st.AnalysisAttempt)
}

// markCurrent records the outcome of the RolloutStep that moved the rollout to its current step.
func (c *canary) markCurrent(ctx context.Context, phase hubv1alpha1.RolloutStepPhase, reason, msg string) {
	c.markStep(ctx, c.ro.Status.CurrentStep, phase, reason, msg)
}

func (c *canary) markStep(ctx context.Context, name string, phase hubv1alpha1.RolloutStepPhase, reason, msg string) {
	if name == "" {
		return
	}
	s := &hubv1alpha1.RolloutStep{}
	if err := c.r.Get(ctx, client.ObjectKey{Namespace: c.ro.Namespace, Name: name}, s); err != nil {
		return
	}
	if s.Status.Phase == hubv1alpha1.StepApplied {
		c.r.setStep(ctx, c.ro, s, phase, reason, msg)
	}
}

func (r *RolloutReconciler) markApplied(key client.ObjectKey, mark string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.applied == nil {
		r.applied = map[client.ObjectKey]renderMark{}
	}
	r.applied[key] = renderMark{fingerprint: mark, at: r.clock().Now()}
}

// reapplyDue says whether an in-progress step should be rendered again: after a restart, or when
// the last render is older than ReapplyEvery (a branch head may have moved for another app).
func (r *RolloutReconciler) reapplyDue(key client.ObjectKey, mark string) bool {
	every := r.ReapplyEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.applied[key]
	return !ok || m.fingerprint != mark || r.clock().Since(m.at) >= every
}

func (r *RolloutReconciler) renderDue(key client.ObjectKey, fp string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.applied[key]
	return !ok || m.fingerprint != fp || r.clock().Since(m.at) >= r.resync()
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

func revisionSuffix(rev string) string {
	if i := strings.LastIndex(rev, "-"); i >= 0 && i+1 < len(rev) {
		rev = rev[i+1:]
	}
	if len(rev) > 8 {
		rev = rev[:8]
	}
	return rev
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
