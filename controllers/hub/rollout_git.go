package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/cellbranch"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/placement"
	"github.com/cellsync/cellsync/hub/render"
	"github.com/cellsync/cellsync/hub/rollout"
)

// writeCells renders the rollout's cell table: canary cells get the canary revision with their
// traffic split (plainly at the last step), cells put back get their last-known-good tree, and
// no other branch is visited, so it keeps its bytes. All of it is one atomic push.
func (x *execution) writeCells(ctx context.Context, st *hubv1alpha1.RolloutStatus) (rollout.Written, error) {
	w := rollout.Written{Before: map[string]string{}, Heads: map[string]string{}, Stable: map[string]string{}, Analyses: map[string]string{}}
	byName := map[string]*hubv1alpha1.Cell{}
	byBranch := map[string]*hubv1alpha1.Cell{}
	for _, cell := range x.placed {
		byName[cell.Name], byBranch[cell.BranchName()] = cell, cell
	}
	key := cellbranch.AppKey{Namespace: x.app.Namespace, Name: x.app.Name}
	// Every cell the rollout holds is placed (the engine lets go of the others first).
	entries := map[string]*hubv1alpha1.RolloutCell{}
	restore := map[string]string{}
	var branches []string
	canaries := 0
	for i := range st.Cells {
		e := &st.Cells[i]
		if !e.Canary && e.LastKnownGood == "" {
			continue
		}
		branch := byName[e.Cell].BranchName()
		entries[branch] = e
		branches = append(branches, branch)
		if e.Canary {
			canaries++
		} else if e.LastKnownGood != rollout.LastKnownGoodNone {
			restore[branch] = e.LastKnownGood
		}
	}
	if len(branches) == 0 {
		return w, nil
	}
	final := st.Step == st.Steps
	sourceCommit := x.app.Annotations[hubv1alpha1.SourceCommitAnnotation]
	msg := fmt.Sprintf("Rollout %s/%s: step %d/%d, %s at %d%%", x.app.Namespace, x.app.Name, st.Step, st.Steps, st.CanaryRevision, st.CanaryWeight)
	if canaries == 0 {
		msg = fmt.Sprintf("Rollout %s/%s: back to the last-known-good commits", x.app.Namespace, x.app.Name)
	}
	res, err := x.r.Store.Apply(ctx, gitstore.Update{
		Message:  msg,
		Branches: branches,
		Restore:  restore,
		Check:    x.mayWrite(ctx),
		Edit: func(branch string, files *gitstore.Tree) error {
			e := entries[branch]
			cell := byBranch[branch]
			meta := cellbranch.CellMeta{Cell: cell.Name, Cluster: cell.Spec.Cluster}
			if !e.Canary {
				if e.LastKnownGood == rollout.LastKnownGoodNone {
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
				w.Stable[e.Cell] = stable
			}
			overrides, err := placement.OverridesFor(x.pl, cell)
			if err != nil {
				return err
			}
			in := render.Input{App: x.app, Cell: cell, Overrides: overrides}
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
			an, err := x.renderAnalysis(st, cell, ra.TargetNamespace, ra.Revision, stable)
			if err != nil || an == nil {
				return err
			}
			w.Analyses[e.Cell] = an.ID
			return cellbranch.PutAnalysis(files, key, an)
		},
	})
	if err != nil {
		return w, err
	}
	for branch, e := range entries {
		w.Before[e.Cell], w.Heads[e.Cell] = res.Before[branch], res.Heads[branch]
	}
	if len(res.Commits) > 0 {
		x.r.event(x.ro, hubv1alpha1.ReasonStepApplied, "%s: committed to %d cell branches", msg, len(res.Commits))
	}
	return w, nil
}

// renderAll keeps the app out of the branch of every cell it is not placed on and, when plain,
// rendered plainly into every placed cell (an all-at-once rollout, a completed canary): one
// atomic push, skipped while nothing it depends on changed and the resync is not due. It visits
// the placed branches and those the last render placed the app on (the cells it left); the
// first render after a start, and each resync, visit every cell branch instead, to find the app
// wherever it is.
func (x *execution) renderAll(ctx context.Context, plain bool) error {
	r := x.r
	key := client.ObjectKeyFromObject(x.ro)
	fp := "sweep/" + fingerprint(x.app, x.pl, x.placed)
	if plain {
		fp = "plain/" + fp
	}
	due, last := r.renderDue(key, fp)
	if !due {
		return nil
	}
	appKey := cellbranch.AppKey{Namespace: x.app.Namespace, Name: x.app.Name}
	placed := map[string]*hubv1alpha1.Cell{}
	branches := make([]string, 0, len(x.placed))
	for _, c := range x.placed {
		placed[c.BranchName()] = c
		branches = append(branches, c.BranchName())
	}
	u := gitstore.Update{
		Message: fmt.Sprintf("Render %s revision %s to %d cells", appKey, render.AppRevision(x.app), len(x.placed)),
		Check:   x.mayWrite(ctx),
	}
	if plain {
		u.Branches = branches
	}
	if last == nil {
		u.Prefixes = []string{hubv1alpha1.CellBranchPrefix}
	}
	var leaving []string
	for _, b := range last {
		if placed[b] == nil {
			leaving = append(leaving, b)
		}
	}
	u.Branches = append(u.Branches, leaving...)
	// The Cells name the branches the app leaves: none to read when it leaves none, and no Git
	// at all for a canary's sweep then (its steps write its placed cells).
	cells := &hubv1alpha1.CellList{}
	if len(leaving) > 0 || u.Prefixes != nil {
		if err := r.List(ctx, cells); err != nil {
			return err
		}
	} else if !plain {
		r.markRendered(key, fp, branches)
		return nil
	}
	sourceCommit := x.app.Annotations[hubv1alpha1.SourceCommitAnnotation]
	u.Edit = func(branch string, files *gitstore.Tree) error {
		if cell := placed[branch]; cell != nil {
			if !plain {
				return nil // the rollout's steps write a canary's placed cells
			}
			// Rendered branch by branch, so that a render over every cell of a large fleet
			// holds one cell's output at a time; a cell that fails abandons the whole update,
			// so no branch gets a partial change.
			rc, err := renderCell(x.app, x.pl, cell)
			if err != nil {
				return err
			}
			return cellbranch.PutApp(files, rc.meta, appKey, rc.app, sourceCommit)
		}
		return cellbranch.RemoveApp(files, cellMetaOf(branch, cells.Items), appKey)
	}
	res, err := r.Store.Apply(ctx, u)
	if err != nil {
		return err
	}
	if plain {
		AppRenders.WithLabelValues(x.app.Namespace, x.app.Name).Inc()
	}
	RenderedBranches.WithLabelValues(x.app.Namespace, x.app.Name).Add(float64(len(res.Heads)))
	if len(res.Commits) > 0 {
		r.event(x.app, hubv1alpha1.ReasonRendered, "Committed revision %s to %d cell branches", render.AppRevision(x.app), len(res.Commits))
	}
	r.markRendered(key, fp, branches)
	return nil
}

// errAppDeleting abandons a render: the app is being deleted and its finalizer takes its files
// out of every branch.
var errAppDeleting = errors.New("the app is being deleted")

// mayWrite is the check every write of the rollout makes inside the Git store's lock, at each
// attempt (gitstore.Update.Check): a render never lands after the app's finalizer removed its
// files, even on a retry after losing a race to that removal.
func (x *execution) mayWrite(ctx context.Context) func() error {
	return func() error {
		app := &hubv1alpha1.ServerlessApp{}
		err := x.r.reader().Get(ctx, client.ObjectKeyFromObject(x.app), app)
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
}

// holdings reads the app's record in every placed cell's branch, for a rollout with no state:
// one listing per file path across the placed branches, not one per cell.
func (x *execution) holdings(ctx context.Context) (map[string]rollout.Holding, error) {
	key := cellbranch.AppKey{Namespace: x.app.Namespace, Name: x.app.Name}
	placed := map[string]*hubv1alpha1.Cell{}
	for _, cell := range x.placed {
		placed[cell.BranchName()] = cell
	}
	notPlaced := func(branch, _ string) bool { return placed[branch] == nil }
	metas, err := x.r.Store.ReadFiles(ctx, hubv1alpha1.CellBranchPrefix, cellbranch.AppMetaPath(key), notPlaced)
	if err != nil {
		return nil, err
	}
	out := map[string]rollout.Holding{}
	wanting := map[string][]string{} // rendered file → the branches that hold it
	for branch, f := range metas {
		m, err := cellbranch.ParseAppMeta(f.Content)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s in branch %s: %w", cellbranch.AppMetaPath(key), branch, err)
		}
		out[placed[branch].Name] = rollout.Holding{Revision: m.Revision}
		for _, p := range m.Files {
			wanting[p] = append(wanting[p], branch)
		}
	}
	for p, branches := range wanting {
		files, err := x.r.Store.ReadFiles(ctx, hubv1alpha1.CellBranchPrefix, p, func(b, _ string) bool { return !slices.Contains(branches, b) })
		if err != nil {
			return nil, err
		}
		for branch, f := range files {
			split, err := render.HasSplit(f.Content)
			if err != nil {
				return nil, fmt.Errorf("cannot read %s in branch %s: %w", p, branch, err)
			}
			h := out[placed[branch].Name]
			h.Split = h.Split || split
			out[placed[branch].Name] = h
		}
	}
	return out, nil
}

// stepMark identifies what the current step renders, for the re-apply throttle.
func stepMark(app *hubv1alpha1.ServerlessApp, st *hubv1alpha1.RolloutStatus) string {
	var canary []string
	for _, e := range st.Cells {
		if e.Canary {
			canary = append(canary, e.Cell)
		}
	}
	return fmt.Sprintf("%s/%d/%d/%s/%d/%d", st.CanaryRevision, app.Generation, st.Step, strings.Join(canary, ","), st.CanaryWeight, st.AnalysisAttempt)
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

func (r *RolloutReconciler) markRendered(key client.ObjectKey, fp string, placed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rendered == nil {
		r.rendered = map[client.ObjectKey]renderMark{}
	}
	r.rendered[key] = renderMark{fingerprint: fp, at: r.clock().Now(), placed: placed}
}

// renderDue says whether a render must reach Git (its inputs changed, or the resync is due), and
// which branches the last render placed the app on: nil when every branch must be visited (no
// render since this hub started, or the resync).
func (r *RolloutReconciler) renderDue(key client.ObjectKey, fp string) (bool, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.rendered[key]
	switch {
	case !ok || r.clock().Since(m.at) >= r.resync():
		return true, nil
	case m.fingerprint != fp:
		return true, m.placed
	}
	return false, nil
}
