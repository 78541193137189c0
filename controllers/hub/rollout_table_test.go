package hub_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/render"
	"github.com/cellsync/cellsync/test/testenv"
)

// A canary over more cells than its status lists reads its cell table back from Git at the
// commit the status names. Anyone who can push to the repository can put a commit there: a
// table the hub did not write stalls the rollout, saying which file and line and why, and no
// cell branch gets a commit.
func TestCellTableTheHubDidNotWriteStallsTheRollout(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "table", "")
	newCell(t, "tb-a", "member-tb-a", map[string]string{hubv1alpha1.LabelRegion: "table"})
	app := canaryApp("table", "web", "p", "ghcr.io/acme/web:v1", step(50, "tb-a"), step(100))
	create(t, newPlacement("table", "p", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "table")}), app)
	agents := newCells(t)
	rev1 := render.AppRevision(app)
	waitStep(t, app, "2/2", hubv1alpha1.PhaseProgressing, 100)
	agents.readyAt(app, rev1, "tb-a")
	waitCompleted(t, app, rev1)
	before := cellHeads(t)

	// A commit on the rollout's table branch with a last-known-good that is no commit hash.
	commit := plantCommit(t, "rollouts/table/web", map[string]string{"cells/00.jsonl": `{"cell":"tb-a","canary":true,"lastKnownGood":"main~3"}` + "\n"})
	ro := rolloutOf(app)
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ro), ro)).To(Succeed())
	base := ro.DeepCopy()
	ro.Status.CellTable = &hubv1alpha1.CellTableRef{Branch: "rollouts/table/web", Commit: commit, Cells: 1}
	g.Expect(k8s.Status().Patch(ctx, ro, client.MergeFrom(base))).To(Succeed())
	setImage(t, app, "ghcr.io/acme/web:v2")

	waitRollout(t, ro, func(g Gomega, r *hubv1alpha1.Rollout) {
		ready := apimeta.FindStatusCondition(r.Status.Conditions, meta.ReadyCondition)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Reason).To(Equal(hubv1alpha1.ReasonCellTableInvalid))
		g.Expect(ready.Message).To(ContainSubstring("the rollout's cell table (branch rollouts/table/web, commit " + commit + ") is not one the hub wrote: cells/00.jsonl line 1"))
		g.Expect(apimeta.IsStatusConditionTrue(r.Status.Conditions, meta.StalledCondition)).To(BeTrue())
	})
	g.Consistently(func(g Gomega) {
		g.Expect(cellHeads(t)).To(Equal(before), "nothing is written while the table is refused")
	}, 2*time.Second, 250*time.Millisecond).Should(Succeed())
}

// plantCommit commits files on top of branch (or as its first commit) straight in the server's
// repository, as anyone with push access could, and returns the commit.
func plantCommit(t *testing.T, branch string, files map[string]string) string {
	t.Helper()
	dir := gitServer.RepoDir(repoName)
	var entries []string
	for path, content := range files {
		blob, err := testenv.GitInput(dir, content, "hash-object", "-w", "--stdin")
		if err != nil {
			t.Fatal(err)
		}
		sub, name, _ := strings.Cut(path, "/")
		subtree, err := testenv.GitInput(dir, "100644 blob "+blob+"\t"+name+"\n", "mktree")
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, "040000 tree "+subtree+"\t"+sub)
	}
	root, err := testenv.GitInput(dir, strings.Join(entries, "\n")+"\n", "mktree")
	if err != nil {
		t.Fatal(err)
	}
	commit, err := testenv.Git(dir, "commit-tree", root, "-m", "planted")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.Git(dir, "update-ref", "refs/heads/"+branch, commit); err != nil {
		t.Fatal(err)
	}
	return commit
}
