package intake_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/cellsync/cellsync/agent/source"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/intake"
	"github.com/cellsync/cellsync/test/testenv"
)

// A cell that controls its status ref fills it with a 1 GiB object: the hub refuses it from the
// object's header (nothing of it is inflated into memory), names it on that cell, fetches it no
// more until the ref moves, and reads every other cell's report as usual.
func TestPollRefusesAHugeStatusRef(t *testing.T) {
	env := newHubAndAgent(t)
	srv, store, url, auth := env.srv, env.store, env.url, env.auth
	ctx := context.Background()
	report := func(cell string) {
		t.Helper()
		b, _ := yaml.Marshal(agentv1alpha1.StatusReport{APIVersion: agentv1alpha1.GroupVersion.String(), Kind: agentv1alpha1.StatusReportKind,
			Cell: cell, HeartbeatTime: metav1.NewTime(time.Now().Truncate(time.Second))})
		if _, err := source.PushReport(ctx, url, auth, agentv1alpha1.StatusRefPrefix+cell, agentv1alpha1.StatusReportFile, b, time.Now(), nil); err != nil {
			t.Fatal(err)
		}
	}
	report("good-1")
	report("good-2")
	// The hostile cell: an orphan commit on its status ref whose status.yaml is 1 GiB of zeros
	// (a pack of about a megabyte).
	work := t.TempDir()
	for _, args := range [][]string{{"init", "-q"}, {"checkout", "-q", "--orphan", "evil"}} {
		if _, err := testenv.Git(work, args...); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(work, "status.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	for _, args := range [][]string{{"add", "status.yaml"}, {"commit", "-q", "-m", "evil"}, {"-c", "http.postBuffer=134217728", "push", "-q", srv.AuthURL("gitops"), "HEAD:refs/heads/status/evil"}} {
		if _, err := testenv.Git(work, args...); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Remove(filepath.Join(work, "status.yaml"))

	reports := intake.NewReports()
	in := intake.New(store, reports, time.Second)
	in.StaleAfter = time.Minute
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	in.Poll(ctx)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.TotalAlloc - before.TotalAlloc); grew > 256<<20 {
		t.Errorf("one poll allocated %d MiB: the huge object was read", grew>>20)
	}
	for _, cell := range []string{"good-1", "good-2"} {
		if _, ok := reports.Get(cell); !ok {
			t.Errorf("%s's report was not read because of another cell's ref", cell)
		}
	}
	if _, ok := reports.Get("evil"); ok {
		t.Error("the huge report was read")
	}
	rej, ok := reports.Rejected("evil")
	if !ok || rej.Reason != hubv1alpha1.ReasonLimitExceeded || !strings.Contains(rej.Message, "1073741824 bytes") {
		t.Fatalf("the refusal is %+v, want LimitExceeded naming the size", rej)
	}

	// Not fetched again while the ref does not move; the other cells go on.
	fetches := srv.Requests().Fetches
	report("good-1")
	in.Poll(ctx)
	if got := srv.Requests().Fetches - fetches; got != 1 {
		t.Errorf("the next poll made %d fetches, want 1 (good-1's new report only)", got)
	}
}
