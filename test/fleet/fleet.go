// Package fleet runs one hub against a simulated fleet: N cells whose agents list, fetch and
// push signed reports with the agent's own Git code (agent/source), without apiservers, against
// one local Git server, while the hub binary, as shipped and in a process of its own, walks one
// app placed on every cell through its rollout. It counts what the fleet costs: bytes and
// requests per agent per poll and per heartbeat, the CPU of the hub, of the agents and of the
// Git server, and the hub's peak heap and resident memory.
package fleet

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/cellsync/cellsync/agent/source"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/hub/cellbranch"
	"github.com/cellsync/cellsync/hub/manager"
	"github.com/cellsync/cellsync/test/testenv"
)

// Options shape a fleet.
type Options struct {
	Cells int
	// ShardSize is how many cells share a status repository; 0 keeps the status refs in the
	// fleet repository, as a single-repository install does.
	ShardSize int
	// Canary walks the app through a two-step canary (10 % of the cells at 50 %, then all);
	// otherwise it rolls out all at once.
	Canary bool
	// Workers are the goroutines that run the agents, each agent polling at most every
	// PollEvery and reporting at least every Heartbeat.
	Workers   int
	PollEvery time.Duration
	Heartbeat time.Duration
	// StaleAfter is the hub's heartbeat threshold (2 minutes when 0). The simulated agents share
	// a few workers, so a round of polls over a large fleet takes minutes: the threshold must
	// be above it, and Heartbeat below it.
	StaleAfter time.Duration
	// StatusInterval is the hub's --status-interval (1 s when 0).
	StatusInterval time.Duration
}

// Fleet is a running hub with its simulated agents.
type Fleet struct {
	o       Options
	Git     *testenv.GitServer
	Hub     client.Client
	repoURL string
	shards  []string
	signer  *openpgp.Entity
	agents  []*agent
	stop    context.CancelFunc
	hub     *hubProcess
	done    sync.WaitGroup
	polls   atomic.Int64
	beats   atomic.Int64
	// peak is the highest heap of this process: the simulated agents, the Git server's HTTP
	// side and the harness.
	peak atomic.Uint64
	// peakHub is the highest heap the hub process reported (go_memstats_heap_alloc_bytes).
	peakHub atomic.Uint64
	// idlePolls and idleBytes count polls that found nothing new, and their bytes.
	idlePolls atomic.Int64
	// beatDue makes a heartbeat due for every agent that last reported before it (Unix ns).
	beatDue atomic.Int64
	// slowestIntake is the longest intake poll seen, in nanoseconds.
	slowestIntake atomic.Int64
}

const (
	ns       = "fleet"
	gitUser  = "fleet"
	gitPass  = "fleet-password"
	hubNS    = "cellsync-system"
	appName  = "web"
	appImage = "ghcr.io/acme/web:v1"
)

// Start starts the Git server, the hub on an envtest apiserver, N Cells, a placement of all of
// them and the app, and the agents.
func Start(tb testing.TB, o Options) *Fleet {
	tb.Helper()
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = 2 * time.Minute
	}
	if o.StatusInterval <= 0 {
		o.StatusInterval = time.Second
	}
	ctrl.SetLogger(logr.Discard())
	f := &Fleet{o: o}
	var err error
	if f.Git, err = testenv.StartGitServer(gitUser, gitPass); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(f.Git.Close)
	// As a Git host does, the server packs a repository's refs once pushes leave many loose:
	// the hub's step writes thousands of cell branches at once.
	f.Git.SetHousekeeping(true)
	if f.repoURL, err = f.Git.CreateRepo("gitops"); err != nil {
		tb.Fatal(err)
	}
	if o.ShardSize > 0 {
		for i := 0; i*o.ShardSize < o.Cells; i++ {
			u, err := f.Git.CreateRepo(fmt.Sprintf("status-%03d", i))
			if err != nil {
				tb.Fatal(err)
			}
			f.shards = append(f.shards, u)
		}
	}
	key, err := testenv.NewSigningKey("fleet")
	if err != nil {
		tb.Fatal(err)
	}
	f.signer = key.Entity

	cluster, err := testenv.StartCluster(testenv.ClusterOptions{HubCRDs: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cluster.Stop() })
	if f.Hub, err = client.New(cluster.Config, client.Options{Scheme: manager.Scheme()}); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	tb.Cleanup(f.Stop)
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: hubNS}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: hubNS, Name: "git"},
			Data: map[string][]byte{gitauth.SecretUsername: []byte(gitUser), gitauth.SecretPassword: []byte(gitPass)}},
	} {
		if err := f.Hub.Create(ctx, obj); err != nil {
			tb.Fatal(err)
		}
	}
	if f.hub, err = startHub(cluster.Config, tb.TempDir(), f.repoURL, o); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(f.StopHub)

	// The cells, created by a few writers at once.
	names := make([]string, o.Cells)
	for i := range names {
		names[i] = fmt.Sprintf("cell-%05d", i)
	}
	parallel(16, len(names), func(i int) {
		c := &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: names[i], Labels: map[string]string{"fleet": "yes"}},
			Spec: hubv1alpha1.CellSpec{Cluster: "member-" + names[i], Namespaces: []string{"apps"}, ReportKeys: []string{key.Public}}}
		if len(f.shards) > 0 {
			c.Spec.StatusURL = f.shards[i/o.ShardSize]
		}
		if err := f.Hub.Create(ctx, c); err != nil {
			tb.Errorf("create %s: %v", names[i], err)
		}
	})
	dir := tb.TempDir()
	for i, n := range names {
		repo, err := source.Open(filepath.Join(dir, n), f.repoURL, hubv1alpha1.CellBranchPrefix+n)
		if err != nil {
			tb.Fatal(err)
		}
		status := f.repoURL
		if len(f.shards) > 0 {
			status = f.shards[i/o.ShardSize]
		}
		f.agents = append(f.agents, &agent{f: f, cell: n, repo: repo, statusURL: status})
	}
	f.run(ctx)
	return f
}

// Deploy creates the placement and the app.
func (f *Fleet) Deploy(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	pl := &hubv1alpha1.CellPlacement{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "all"},
		Spec: hubv1alpha1.CellPlacementSpec{CellSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"fleet": "yes"}}}}
	app := &hubv1alpha1.ServerlessApp{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: appName},
		Spec: hubv1alpha1.ServerlessAppSpec{PlacementRef: corev1.LocalObjectReference{Name: "all"}, Template: hubv1alpha1.RevisionTemplate{Image: appImage}}}
	if f.o.Canary {
		app.Spec.Strategy = &hubv1alpha1.Strategy{Type: hubv1alpha1.StrategyCanary, Canary: &hubv1alpha1.CanaryStrategy{Steps: []hubv1alpha1.CanaryStep{
			{Cells: hubv1alpha1.StepCells{Percent: ptr.To[int32](10)}, Weight: 50},
			{Cells: hubv1alpha1.StepCells{Percent: ptr.To[int32](100)}, Weight: 100},
		}}}
	}
	for _, o := range []client.Object{pl, app} {
		if err := f.Hub.Create(ctx, o); err != nil {
			tb.Fatal(err)
		}
	}
}

// SetImage changes the app's image: a new revision rolls out.
func (f *Fleet) SetImage(tb testing.TB, image string) {
	tb.Helper()
	ctx := context.Background()
	app := &hubv1alpha1.ServerlessApp{}
	if err := f.Hub.Get(ctx, client.ObjectKey{Namespace: ns, Name: appName}, app); err != nil {
		tb.Fatal(err)
	}
	app.Spec.Template.Image = image
	if err := f.Hub.Update(ctx, app); err != nil {
		tb.Fatal(err)
	}
}

// Rollout is the app's Rollout as the hub shows it.
func (f *Fleet) Rollout() (*hubv1alpha1.Rollout, error) {
	ro := &hubv1alpha1.Rollout{}
	return ro, f.Hub.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: appName}, ro)
}

// WaitCompleted waits until the rollout of the app's current image is Completed.
func (f *Fleet) WaitCompleted(tb testing.TB, image string, timeout time.Duration) *hubv1alpha1.Rollout {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var ro *hubv1alpha1.Rollout
	var last string
	for time.Now().Before(deadline) {
		var err error
		if ro, err = f.Rollout(); err == nil && ro.Status.Phase == hubv1alpha1.PhaseCompleted && len(ro.Status.History) > 0 &&
			ro.Status.History[len(ro.Status.History)-1].Template.Image == image && ro.Status.ReadyCells == int32(f.o.Cells) {
			return ro
		}
		if ro != nil {
			if s := fmt.Sprintf("%s %s %s: %.200s", ro.Status.Phase, ro.Status.StepDisplay, ro.Status.CellsDisplay, ro.Status.Message); s != last {
				tb.Logf("rollout: %s", s)
				last = s
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	tb.Fatalf("the rollout of %s did not complete in %s: %+v\nthe end of the hub's log:\n%s", image, timeout, ro.Status, f.hub.logTail())
	return nil
}

// Idle lets every agent poll and heartbeat with nothing changing for d, and returns what one
// idle poll and one heartbeat cost the Git server, per agent. Every agent's heartbeat falls due
// as the window opens, so that the window sees heartbeats whatever the fleet's interval.
func (f *Fleet) Idle(d time.Duration) IdleCosts {
	f.beatDue.Store(time.Now().UnixNano())
	before, p0, b0, i0 := f.Git.Requests(), f.polls.Load(), f.beats.Load(), f.idlePolls.Load()
	time.Sleep(d)
	after, p1, b1, i1 := f.Git.Requests(), f.polls.Load(), f.beats.Load(), f.idlePolls.Load()
	c := IdleCosts{Polls: p1 - p0, Beats: b1 - b0}
	fetchSide := float64((after.BytesIn+after.BytesOut)-(before.BytesIn+before.BytesOut)) - float64(after.PushBytes-before.PushBytes)
	if idle := i1 - i0; idle > 0 {
		c.PollBytes = fetchSide / float64(idle)
		c.PollListings = float64(after.RefListings-before.RefListings) / float64(idle)
		c.PollRequests = float64((after.HTTP-after.PushRequests)-(before.HTTP-before.PushRequests)) / float64(idle)
	}
	if c.Beats > 0 {
		c.BeatBytes = float64(after.PushBytes-before.PushBytes) / float64(c.Beats)
		c.BeatRequests = float64(after.PushRequests-before.PushRequests) / float64(c.Beats)
	}
	return c
}

// IdleCosts is what the Git server saw of an idle fleet: per idle poll, bytes, ref listings and
// requests; per heartbeat, bytes and requests.
type IdleCosts struct {
	Polls, Beats                          int64
	PollBytes, PollListings, PollRequests float64
	BeatBytes, BeatRequests               float64
}

// Stop stops the agents and the hub.
func (f *Fleet) Stop() {
	if f.stop != nil {
		f.stop()
		f.done.Wait()
		f.stop = nil
	}
	f.StopHub()
}

// StopHub stops the hub; the agents go on polling and heartbeating, so that what they cost the
// Git server can be counted on its own.
func (f *Fleet) StopHub() {
	if f.hub != nil && f.hub.p.Cmd.ProcessState == nil {
		f.hub.p.Stop()
	}
}

// HubCPU is the hub process's CPU time so far.
func (f *Fleet) HubCPU() time.Duration { return f.hub.cpu() }

// HubPeakRSS is the hub process's peak resident memory; call it before StopHub.
func (f *Fleet) HubPeakRSS() uint64 { return f.hub.peakRSS() }

// PeakHeap is the highest heap of this process (the simulated agents, the Git server's HTTP side
// and the harness) seen since the fleet started.
func (f *Fleet) PeakHeap() uint64 { return f.peak.Load() }

// PeakHubHeap is the highest heap the hub process reported, sampled every second.
func (f *Fleet) PeakHubHeap() uint64 { return f.peakHub.Load() }

// SlowestIntakePoll is the longest intake poll seen (sampled every second): the listing of every
// status repository and the reading of what moved.
func (f *Fleet) SlowestIntakePoll() time.Duration { return time.Duration(f.slowestIntake.Load()) }

// run starts the agents on the workers, and a sampler of the heap.
func (f *Fleet) run(ctx context.Context) {
	work := make(chan *agent, len(f.agents))
	for _, a := range f.agents {
		work <- a
	}
	for range f.o.Workers {
		f.done.Add(1)
		go func() {
			defer f.done.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case a := <-work:
					if wait := time.Until(a.next); wait > 0 {
						select {
						case <-ctx.Done():
							return
						case <-time.After(wait):
						}
					}
					a.poll(ctx)
					a.next = time.Now().Add(f.o.PollEvery)
					work <- a
				}
			}
		}()
	}
	f.done.Add(1)
	go func() {
		defer f.done.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > f.peak.Load() {
				f.peak.Store(ms.HeapAlloc)
			}
			if i%5 == 0 {
				if heap, poll, err := f.hub.sample(); err == nil {
					if uint64(heap) > f.peakHub.Load() {
						f.peakHub.Store(uint64(heap))
						f.hub.saveHeapProfile()
					}
					if int64(poll) > f.slowestIntake.Load() {
						f.slowestIntake.Store(int64(poll))
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// agent is one simulated cell agent: it lists its branch, fetches a new head, reads which
// revision of the app the head holds, and pushes a signed report when it changed or the
// heartbeat is due, as the agent does (applying is left out: there is no member cluster).
type agent struct {
	f         *Fleet
	cell      string
	repo      *source.Repo
	statusURL string
	next      time.Time
	applied   string
	revision  string
	reported  string
	reportAt  time.Time
	reporter  *source.Reporter
}

func (a *agent) poll(ctx context.Context) {
	auth := &githttp.BasicAuth{Username: gitUser, Password: gitPass}
	a.f.polls.Add(1)
	head, err := a.repo.Head(ctx, auth)
	if err != nil {
		return
	}
	if head != "" && head != a.applied {
		if err := a.repo.Fetch(ctx, auth, head); err != nil {
			return
		}
		tree, err := a.repo.Tree(head)
		if err != nil {
			return
		}
		a.revision = ""
		if b, err := tree.Read(cellbranch.AppMetaPath(cellbranch.AppKey{Namespace: ns, Name: appName})); err == nil {
			m := &cellbranch.AppMeta{}
			if yaml.Unmarshal(b, m) == nil {
				a.revision = m.Revision
			}
		}
		a.applied = head
	} else {
		a.f.idlePolls.Add(1)
	}
	state := a.applied + "/" + a.revision
	now := time.Now()
	if state == a.reported && now.Sub(a.reportAt) < a.f.o.Heartbeat && a.reportAt.UnixNano() >= a.f.beatDue.Load() {
		return
	}
	rep := agentv1alpha1.StatusReport{APIVersion: agentv1alpha1.GroupVersion.String(), Kind: agentv1alpha1.StatusReportKind,
		Cell: a.cell, AgentVersion: "fleet", HeartbeatTime: metav1.NewTime(now.UTC().Truncate(time.Second)), AppliedCommit: a.applied,
		Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "ReconciliationSucceeded", Message: "Applied"}}}
	if a.revision != "" {
		rep.Apps = []agentv1alpha1.AppReport{{App: appName, AppNamespace: ns, Namespace: "apps", Name: appName, Kind: "Service",
			Ready: true, LatestReadyRevision: a.revision, LatestCreatedRevision: a.revision}}
	}
	body, err := yaml.Marshal(rep)
	if err != nil {
		return
	}
	if a.reporter == nil {
		a.reporter = &source.Reporter{URL: a.statusURL, Branch: agentv1alpha1.StatusRefPrefix + a.cell, File: agentv1alpha1.StatusReportFile}
	}
	if _, err := a.reporter.Push(ctx, auth, body, now, a.f.signer); err != nil {
		return
	}
	a.f.beats.Add(1)
	a.reported, a.reportAt = state, now
}

// parallel runs f(0..n-1) on k goroutines.
func parallel(k, n int, f func(i int)) {
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

// CPU is the process's CPU time and its finished children's (the Git server's git processes).
func CPU() (self, children time.Duration) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	children = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return self, children
}

// Egress projects the Git host's egress for a fleet of n cells at one poll and one heartbeat per
// interval each, in bytes per second.
func Egress(n int, pollBytes, reportBytes float64, interval time.Duration) float64 {
	return float64(n) * (pollBytes + reportBytes) / interval.Seconds()
}

// MiB formats bytes.
func MiB(b uint64) string { return fmt.Sprintf("%.0f MiB", math.Round(float64(b)/(1<<20))) }

func gitIn(f *Fleet, args ...string) (string, error) {
	return testenv.Git(f.Git.RepoDir("gitops"), args...)
}
