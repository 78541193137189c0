package intake_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/yaml"

	"github.com/cellsync/cellsync/agent/source"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/intake"
)

// consume drains an intake's wake-ups for the life of the test, as the controllers do.
func consume(t *testing.T, chs ...chan event.GenericEvent) {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	for _, ch := range chs {
		go func() {
			for {
				select {
				case <-ch:
				case <-stop:
					return
				}
			}
		}()
	}
}

// reportYAML is a cell's report with a heartbeat at hb.
func reportYAML(t *testing.T, cell string, hb time.Time) []byte {
	t.Helper()
	b, err := yaml.Marshal(agentv1alpha1.StatusReport{
		APIVersion: agentv1alpha1.GroupVersion.String(), Kind: agentv1alpha1.StatusReportKind, Cell: cell,
		HeartbeatTime: metav1.NewTime(hb), AppliedCommit: "0123456789abcdef0123456789abcdef01234567",
		Apps: []agentv1alpha1.AppReport{{App: "web", AppNamespace: "shop", Namespace: "apps", Name: "web", Kind: "Service", Ready: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Ten heartbeat rounds at 2,000 cells: in every round every cell's report moves (an orphan
// commit, as agents push them) and the intake reads them all; neither the intake's store nor the
// heap grows after the second round.
func TestIntakeMemoryIsFlatAcrossHeartbeatRounds(t *testing.T) {
	const cells, rounds = 2000, 10
	env := newHubAndAgent(t)
	reports := intake.NewReports()
	in := intake.New(env.store, reports, time.Second)
	in.StaleAfter = time.Minute
	consume(t, in.Cells, in.Apps, in.Rollouts)
	base := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	heartbeat := func(r int) time.Time { return base.Add(time.Duration(r) * 30 * time.Second) }
	// Every agent's report of round r, written straight into the server's repository.
	write := func(r int) {
		var b bytes.Buffer
		for i := range cells {
			cell := fmt.Sprintf("c-%04d", i)
			rep := reportYAML(t, cell, heartbeat(r))
			fmt.Fprintf(&b, "commit refs/heads/%s%s\ncommitter agent <agent@cellsync.io> %d +0000\ndata 13\nStatus report\nM 644 inline %s\ndata %d\n%s\n",
				agentv1alpha1.StatusRefPrefix, cell, heartbeat(r).Unix(), agentv1alpha1.StatusReportFile, len(rep), rep)
		}
		cmd := exec.Command("git", "fast-import", "--quiet", "--force")
		cmd.Dir = env.srv.RepoDir("gitops")
		cmd.Stdin = &b
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("fast-import: %v: %s", err, out)
		}
	}
	type sample struct {
		objects int
		heap    uint64
	}
	var samples []sample
	ctx := context.Background()
	for r := 1; r <= rounds; r++ {
		write(r)
		in.Now = func() time.Time { return heartbeat(r).Add(time.Second) }
		in.Poll(ctx)
		for i := range cells {
			cell := fmt.Sprintf("c-%04d", i)
			if e, ok := reports.Get(cell); !ok || !e.Report.HeartbeatTime.Equal(&metav1.Time{Time: heartbeat(r)}) {
				t.Fatalf("round %d: the report of %s was not read (%v)", r, cell, e.Report.HeartbeatTime)
			}
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		samples = append(samples, sample{objects: env.store.Objects(), heap: ms.HeapAlloc})
		t.Logf("round %2d: %d cells read, store %d objects, heap %.1f MiB", r, cells, env.store.Objects(), float64(ms.HeapAlloc)/(1<<20))
	}
	second := samples[1]
	const slack = 8 << 20
	for r, s := range samples[2:] {
		if s.objects > second.objects {
			t.Errorf("round %d: the intake's store holds %d objects, more than the %d of round 2", r+3, s.objects, second.objects)
		}
		if s.heap > second.heap+slack {
			t.Errorf("round %d: heap %.1f MiB, more than round 2's %.1f MiB by over 8 MiB", r+3, float64(s.heap)/(1<<20), float64(second.heap)/(1<<20))
		}
	}
}

// Each cell's report is read from its own repository: the hub's for cells without a status
// repository, and the status repository its Cell names for the others. A report on a ref of the
// wrong repository is ignored. A status repository that cannot be read holds up no other cell:
// the poll completes, its cells say why no report of theirs is read (and turn stale like any
// cell not heard from), until it can be read again.
func TestReportsAreReadFromEachCellsStatusRepository(t *testing.T) {
	env := newHubAndAgent(t)
	shard, err := env.srv.CreateRepo("status-a")
	if err != nil {
		t.Fatal(err)
	}
	reports := intake.NewReports()
	in := intake.New(env.store, reports, time.Second)
	consume(t, in.Cells, in.Apps, in.Rollouts)
	repos := map[string][]string{shard: {"c2"}}
	in.StatusRepos = func(context.Context) (map[string][]string, error) { return repos, nil }
	opened := map[string]int{}
	in.StoreFor = func(url string) (*gitstore.Store, error) {
		opened[url]++
		return gitstore.New(gitstore.Options{URL: url, Credentials: func(context.Context) (transport.AuthMethod, *openpgp.Entity, error) {
			return env.auth, nil, nil
		}})
	}
	ctx := context.Background()
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	push := func(url, cell string, hb time.Time) {
		t.Helper()
		if _, err := source.PushReport(ctx, url, env.auth, agentv1alpha1.StatusRefPrefix+cell, agentv1alpha1.StatusReportFile, reportYAML(t, cell, hb), hb, nil); err != nil {
			t.Fatal(err)
		}
	}
	push(env.url, "c1", t0)
	push(shard, "c2", t0.Add(time.Second))
	// Reports on the wrong repository: c2 in the hub's, c1 in c2's shard.
	push(env.url, "c2", t0.Add(time.Hour))
	push(shard, "c1", t0.Add(time.Hour))
	in.Now = func() time.Time { return t0.Add(time.Minute) }
	in.Poll(ctx)
	for cell, want := range map[string]time.Time{"c1": t0, "c2": t0.Add(time.Second)} {
		e, ok := reports.Get(cell)
		if !ok || !e.Report.HeartbeatTime.Time.Equal(want) {
			t.Errorf("%s: heartbeat %v, want %v, from its own repository", cell, e.Report.HeartbeatTime, want)
		}
	}
	if !reports.PolledAt().Equal(t0.Add(time.Minute)) {
		t.Errorf("a complete poll is recorded, got %v", reports.PolledAt())
	}

	// c3's status repository does not exist, and c4's URL holds a password (no store opens it):
	// c1 and c2 are still read.
	withPassword := strings.Replace(env.srv.URL("status-b"), "http://", "http://u:secret@", 1)
	repos = map[string][]string{shard: {"c2"}, env.srv.URL("missing"): {"c3"}, withPassword: {"c4"}}
	push(env.url, "c1", t0.Add(2*time.Minute))
	push(shard, "c2", t0.Add(2*time.Minute))
	in.Now = func() time.Time { return t0.Add(3 * time.Minute) }
	in.Poll(ctx)
	for _, cell := range []string{"c1", "c2"} {
		if e, _ := reports.Get(cell); !e.Report.HeartbeatTime.Time.Equal(t0.Add(2 * time.Minute)) {
			t.Errorf("%s was not read beside a status repository that cannot be read", cell)
		}
	}
	if !reports.PolledAt().Equal(t0.Add(3 * time.Minute)) {
		t.Errorf("one status repository that cannot be read must not hold up the poll; polled at %v", reports.PolledAt())
	}
	rej, ok := reports.Rejected("c3")
	if !ok || rej.Reason != "GitUnavailable" || !strings.Contains(rej.Message, "status repository "+env.srv.URL("missing")+" cannot be read") {
		t.Errorf("c3 must say its status repository cannot be read, got %+v", rej)
	}
	if _, ok := reports.Rejected("c2"); ok {
		t.Errorf("c2's repository was read; it has nothing to say")
	}
	if rej, ok := reports.Rejected("c4"); !ok || !strings.Contains(rej.Message, "password") || strings.Contains(rej.Message, "u:secret@") {
		t.Errorf("c4 must say why its status repository cannot be opened, without the password: %+v", rej)
	}
	// The repository appears (an operator created it): c3's report is read and the note goes.
	if _, err := env.srv.CreateRepo("missing"); err != nil {
		t.Fatal(err)
	}
	push(env.srv.URL("missing"), "c3", t0.Add(4*time.Minute))
	in.Now = func() time.Time { return t0.Add(5 * time.Minute) }
	in.Poll(ctx)
	if _, ok := reports.Rejected("c3"); ok {
		t.Errorf("c3's status repository can be read again; the note must go")
	}
	if e, ok := reports.Get("c3"); !ok || !e.Report.HeartbeatTime.Time.Equal(t0.Add(4*time.Minute)) {
		t.Errorf("c3's report was not read from its status repository")
	}
	if opened[shard] != 1 {
		t.Errorf("the shard's store was opened %d times; it is kept between polls", opened[shard])
	}
}

// A poll over many status repositories lists each once (a few at a time) and takes every
// report, whatever order the listings finish in; the poll's metrics say how long it took and
// over how many repositories.
func TestPollListsEveryStatusRepositoryOnce(t *testing.T) {
	env := newHubAndAgent(t)
	reports := intake.NewReports()
	in := intake.New(env.store, reports, time.Second)
	consume(t, in.Cells, in.Apps, in.Rollouts)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	repos := map[string][]string{}
	for k := range 12 {
		url, err := env.srv.CreateRepo(fmt.Sprintf("status-%02d", k))
		if err != nil {
			t.Fatal(err)
		}
		cell := fmt.Sprintf("c%02d", k)
		repos[url] = []string{cell}
		hb := t0.Add(time.Duration(k) * time.Second)
		if _, err := source.PushReport(ctx, url, env.auth, agentv1alpha1.StatusRefPrefix+cell, agentv1alpha1.StatusReportFile, reportYAML(t, cell, hb), hb, nil); err != nil {
			t.Fatal(err)
		}
	}
	in.StatusRepos = func(context.Context) (map[string][]string, error) { return repos, nil }
	in.StoreFor = func(url string) (*gitstore.Store, error) {
		return gitstore.New(gitstore.Options{URL: url, Credentials: func(context.Context) (transport.AuthMethod, *openpgp.Entity, error) {
			return env.auth, nil, nil
		}})
	}
	in.Now = func() time.Time { return t0.Add(time.Minute) }
	intake.LastPollDuration.Set(0) // other tests' polls set it too
	intake.PollRepositories.Set(0)
	before := env.srv.Requests()
	in.Poll(ctx)
	if after := env.srv.Requests(); after.RefListings-before.RefListings != 13 || after.Fetches-before.Fetches != 12 {
		t.Errorf("one poll made %d listings and %d fetches; want 13 listings (the hub's repository and 12 status repositories, once each, "+
			"and no advertisement before a fetch) and 12 fetches (each moved report)", after.RefListings-before.RefListings, after.Fetches-before.Fetches)
	}
	for k := range 12 {
		cell := fmt.Sprintf("c%02d", k)
		if e, ok := reports.Get(cell); !ok || !e.Report.HeartbeatTime.Time.Equal(t0.Add(time.Duration(k)*time.Second)) {
			t.Errorf("%s: report not read from its status repository (%+v)", cell, e.Report.HeartbeatTime)
		}
	}
	if got := testutil.ToFloat64(intake.PollRepositories); got != 13 {
		t.Errorf("cellsync_hub_intake_repositories = %v, want 13", got)
	}
	if got := testutil.ToFloat64(intake.LastPollDuration); got <= 0 {
		t.Errorf("cellsync_hub_intake_last_poll_duration_seconds = %v, want the poll's duration", got)
	}
	// Nothing moved: the next poll lists each repository once more and fetches nothing.
	r0 := env.srv.Requests()
	in.Poll(ctx)
	if r1 := env.srv.Requests(); r1.RefListings-r0.RefListings != 13 || r1.Fetches != r0.Fetches || r1.HTTP-r0.HTTP != 13 {
		t.Errorf("an idle poll made %d listings and %d fetches in %d requests; want 13 and 0 in 13 (each repository spoke v2 before: "+
			"its listing is the ls-refs request alone)", r1.RefListings-r0.RefListings, r1.Fetches-r0.Fetches, r1.HTTP-r0.HTTP)
	}
	// A server without protocol v2: the full advertisement, and go-git's fetch, read the
	// report that moved just the same.
	env.srv.SetProtocolV0(true)
	defer env.srv.SetProtocolV0(false)
	shard := env.srv.URL("status-05")
	hb := t0.Add(30 * time.Second)
	if _, err := source.PushReport(ctx, shard, env.auth, agentv1alpha1.StatusRefPrefix+"c05", agentv1alpha1.StatusReportFile, reportYAML(t, "c05", hb), hb, nil); err != nil {
		t.Fatal(err)
	}
	in.Poll(ctx)
	if e, ok := reports.Get("c05"); !ok || !e.Report.HeartbeatTime.Time.Equal(hb) {
		t.Errorf("from a server without v2, c05's new report was not read (%+v)", e.Report.HeartbeatTime)
	}
}
