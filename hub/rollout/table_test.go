package rollout

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

const commitA = "0123456789abcdef0123456789abcdef01234567"

func TestCellTableReadsBackWhatItKeeps(t *testing.T) {
	since := metav1.NewTime(t0)
	cells := []hubv1alpha1.RolloutCell{
		{Cell: "a", Canary: true, Weight: 20, StableRevision: "web-00001", LastKnownGood: commitA, ExpectedCommit: commitA, ExpectedSince: &since,
			Analysis: &hubv1alpha1.CellAnalysis{ID: "an-1", Phase: hubv1alpha1.AnalysisSuccessful}, Ready: true, Updated: true, Message: "ok"},
		{Cell: "b", LastKnownGood: LastKnownGoodNone},
		{Cell: "c", Ready: true, Revision: "web-00001"},
	}
	files, n := Table(cells)
	if n != 2 {
		t.Fatalf("the table keeps the cells the rollout holds: %d, want 2", n)
	}
	st := hubv1alpha1.RolloutStatus{Cells: []hubv1alpha1.RolloutCell{{Cell: "c", Ready: true}}}
	if err := Remember(&st, files); err != nil {
		t.Fatal(err)
	}
	want := []hubv1alpha1.RolloutCell{
		{Cell: "a", Canary: true, Weight: 20, StableRevision: "web-00001", LastKnownGood: commitA, ExpectedCommit: commitA, ExpectedSince: &since,
			Analysis: &hubv1alpha1.CellAnalysis{ID: "an-1", Phase: hubv1alpha1.AnalysisRunning}},
		{Cell: "b", LastKnownGood: LastKnownGoodNone},
		{Cell: "c", Ready: true},
	}
	if !equality.Semantic.DeepEqual(st.Cells, want) {
		t.Fatalf("read back\n%+v\nwant\n%+v", st.Cells, want)
	}
	// A cell the status lists keeps the verdict it shows for the same analysis: reading the
	// table back changes nothing a person sees.
	listed := hubv1alpha1.RolloutStatus{Cells: []hubv1alpha1.RolloutCell{cells[0]}}
	listed.Cells[0].Analysis.Phase = hubv1alpha1.AnalysisFailed
	before := listed.DeepCopy()
	if err := Remember(&listed, files); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(listed.Cells[0], before.Cells[0]) {
		t.Fatalf("a listed cell changed on reading the table back:\n%+v\nwas\n%+v", listed.Cells[0], before.Cells[0])
	}
	if files, _ := Table([]hubv1alpha1.RolloutCell{{Cell: "c", Ready: true}}); files != nil {
		t.Fatalf("a table with nothing to remember is empty: %v", files)
	}
}

// A cell table comes back from Git, where anyone with push access could have written it: a
// table that is not what the hub writes is refused whole, with the file and line.
func TestCellTableRefusesWhatTheHubDoesNotWrite(t *testing.T) {
	shard := shardOf("a")
	good := `{"cell":"a","canary":true,"weight":20,"lastKnownGood":"` + commitA + `"}`
	for _, tt := range []struct {
		name  string
		files map[string][]byte
		says  string
	}{
		{"not JSON", map[string][]byte{shard: []byte("{")}, shard + " line 1"},
		{"an unknown field", map[string][]byte{shard: []byte(`{"cell":"a","admin":true}`)}, `unknown field "admin"`},
		{"a cell in another cell's shard", map[string][]byte{TableDir + "/zz.jsonl": []byte(good)}, "belongs in " + shard},
		{"a cell twice", map[string][]byte{shard: []byte(good + "\n" + good)}, "cell a appears twice"},
		{"a bad name", map[string][]byte{shard: []byte(`{"cell":"../../etc"}`)}, `cell "../../etc"`},
		{"a last-known-good that is no commit", map[string][]byte{shard: []byte(`{"cell":"a","lastKnownGood":"main~3"}`)}, "is not a commit hash"},
		{"an expected commit that is no commit", map[string][]byte{shard: []byte(`{"cell":"a","expectedCommit":"HEAD"}`)}, "is not a commit hash"},
		{"a weight above 100", map[string][]byte{shard: []byte(`{"cell":"a","weight":150}`)}, "weight 150"},
		{"a bad time", map[string][]byte{shard: []byte(`{"cell":"a","expectedSince":"yesterday"}`)}, "expectedSince"},
		{"a shard past the size limit", map[string][]byte{shard: []byte(strings.Repeat(" ", maxTableFile+1))}, "above the limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := hubv1alpha1.RolloutStatus{Cells: []hubv1alpha1.RolloutCell{{Cell: "b", Ready: true}}}
			err := Remember(&st, tt.files)
			var te *TableError
			if !errors.As(err, &te) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("want a TableError saying %q, got %v", tt.says, err)
			}
			if len(st.Cells) != 1 || st.Cells[0].Cell != "b" || !st.Cells[0].Ready {
				t.Fatalf("nothing is folded in from a refused table: %+v", st.Cells)
			}
		})
	}
}

// A canary over more cells than the status lists walks its steps and aborts back to every
// touched cell's last-known-good tree when those commits live only in the cell table: the
// world keeps the first StatusCells cells in the status between decisions and reads the rest
// back from the table's files, as the controller does with Git.
func TestCanaryBeyondTheStatusListKeepsItsTableInGit(t *testing.T) {
	names := make([]string, 1500)
	for i := range names {
		names[i] = fmt.Sprintf("cell-%04d", i)
	}
	step1 := hubv1alpha1.CanaryStep{Cells: hubv1alpha1.StepCells{Names: []string{"cell-0001", "cell-1400", "cell-1499"}, Percent: ptr.To[int32](10)}, Weight: 20}
	w := newWorld(t, canary("ghcr.io/acme/web:v1", StaleWait, step1, at(100)), names...)
	v1 := w.rev()
	w.decide()
	w.report(true, "", names...)
	w.decide()
	w.expect(hubv1alpha1.PhaseCompleted, "2/2", "Revision "+v1+" runs in every placed cell")

	v2 := w.setImage("ghcr.io/acme/web:v2")
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/2", "Waiting for cell-0000: applied")
	if !strings.HasSuffix(w.st.Message, "; and 140 more") {
		t.Fatalf("a step over many cells names some and counts the rest: %q", w.st.Message)
	}
	if w.tables == 0 {
		t.Fatal("the cell table never went through its files")
	}
	w.expectTrees(map[string]string{"cell-0001": v2 + "@20", "cell-1400": v2 + "@20", "cell-1499": v2 + "@20", "cell-1300": v1 + "@100"})
	// 10 % of the placement, the named cells first.
	masked := append(append([]string{}, names[:148]...), "cell-1400", "cell-1499")
	w.report(true, "", masked...)
	w.decide()
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "2/2", "")
	w.report(true, "", names...)
	w.decide()
	w.expect(hubv1alpha1.PhaseCompleted, "2/2", "Revision "+v2+" runs in every placed cell")
	w.expectTrees(map[string]string{"cell-0000": v2 + "@100", "cell-1499": v2 + "@100"})
	if files, _ := Table(w.st.Cells); files != nil {
		t.Fatalf("a completed rollout remembers nothing: %d shards", len(files))
	}

	// v3 fails in cell-1499, which only the table knows the last-known-good commit of.
	v3 := w.setImage("ghcr.io/acme/web:v3")
	w.decide()
	w.expectTrees(map[string]string{"cell-1499": v3 + "@20"})
	w.report(false, "", "cell-1499")
	w.tick(6 * time.Minute)
	w.report(false, "", "cell-1499")
	w.decide()
	w.expect(hubv1alpha1.PhaseAborted, "1/2", "Canary failed: cell-1499")
	w.expectTrees(map[string]string{"cell-0001": v2 + "@100", "cell-1400": v2 + "@100", "cell-1499": v2 + "@100", "cell-0147": v2 + "@100", "cell-0148": v2 + "@100"})
}
