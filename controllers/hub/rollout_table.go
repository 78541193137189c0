package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/rollout"
)

// A canary over more cells than a Rollout's status lists (rollout.StatusCells) keeps its cell
// table, what it remembers of each cell it holds, in Git: shard files on the rollout's own
// branch of the hub's repository. The status names the table's commit and the hub reads the
// table at that commit, so status and table always go together.

// tableBranch is the branch that holds a rollout's cell table.
func tableBranch(ns, name string) string { return "rollouts/" + ns + "/" + name }

// loadTable folds the rollout's cell table into its status, read at the commit the status names.
func (x *execution) loadTable(ctx context.Context) error {
	ref := x.ro.Status.CellTable
	if ref == nil {
		return nil
	}
	if want := tableBranch(x.ro.Namespace, x.ro.Name); ref.Branch != want {
		return &rollout.TableError{Message: fmt.Sprintf("status.cellTable names branch %q; this rollout's table is on %q", ref.Branch, want)}
	}
	files, err := x.r.Store.ReadCommit(ctx, ref.Branch, ref.Commit, rollout.TableDir)
	if err != nil {
		return fmt.Errorf("failed to read the rollout's cell table (branch %s, commit %s): %w", ref.Branch, ref.Commit, err)
	}
	if err := rollout.Remember(&x.ro.Status, files); err != nil {
		var te *rollout.TableError
		if errors.As(err, &te) {
			return &rollout.TableError{Message: fmt.Sprintf("the rollout's cell table (branch %s, commit %s) is not one the hub wrote: %s; "+
				"nothing is written until a person restores the branch or removes status.cellTable", ref.Branch, ref.Commit, te.Message)}
		}
		return err
	}
	x.table = files
	return nil
}

// saveTable keeps the cell table in Git while it has more cells than the status lists, and
// writes it only when what the rollout remembers changed. A table that empties (the rollout
// completed) is written empty once, and the status stops naming it.
func (x *execution) saveTable(ctx context.Context, st *hubv1alpha1.RolloutStatus) error {
	var files map[string][]byte
	n := 0
	if len(st.Cells) > rollout.StatusCells {
		files, n = rollout.Table(st.Cells)
	}
	switch {
	case files == nil && st.CellTable == nil:
		return nil
	case st.CellTable != nil && maps.EqualFunc(files, x.table, bytes.Equal):
		if files == nil {
			st.CellTable = nil
		}
		return nil
	}
	branch := tableBranch(x.ro.Namespace, x.ro.Name)
	res, err := x.r.Store.Apply(ctx, gitstore.Update{
		Message:  fmt.Sprintf("Rollout %s/%s: cell table of %s at step %d/%d, %d cells", x.ro.Namespace, x.ro.Name, orDash(st.CanaryRevision), st.Step, st.Steps, n),
		Branches: []string{branch},
		Check:    x.mayWrite(ctx),
		Edit: func(_ string, t *gitstore.Tree) error {
			writeTable(t, files)
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("failed to write the rollout's cell table to branch %s: %w", branch, err)
	}
	x.table = files
	st.CellTable = nil
	if files != nil {
		st.CellTable = &hubv1alpha1.CellTableRef{Branch: branch, Commit: res.Heads[branch], Cells: int32(n)}
	}
	return nil
}

// writeTable makes the table branch's tree hold exactly files (nothing, for nil).
func writeTable(t *gitstore.Tree, files map[string][]byte) {
	for _, p := range slices.Clone(t.List()) {
		if _, ok := files[p]; !ok {
			t.Delete(p)
		}
	}
	for p, b := range files {
		t.Write(p, b)
	}
}

// shownCells bounds the status's list; the cell table in Git holds the rest.
func shownCells(st *hubv1alpha1.RolloutStatus) {
	if len(st.Cells) > rollout.StatusCells {
		st.Cells = st.Cells[:rollout.StatusCells]
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
