package fleet

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// A fleet of 1,200 cells, counted rather than timed: status refs in shards of 64 cells, one app
// placed on every cell walks a two-step canary (more cells than a Rollout's status lists, so
// its cell table lives in Git); every branch gets exactly the commits of the steps that reached
// it; an idle poll is one request and moves under 1 KB, every report push under 8 KB on average
// and a heartbeat after an agent's first push one request under 2 KB.
func TestFleetOf1200Cells(t *testing.T) {
	const cells = 1200
	f := Start(t, Options{Cells: cells, ShardSize: 64, Canary: true, Workers: 4, PollEvery: 2 * time.Second, Heartbeat: time.Minute})
	f.Deploy(t)
	f.WaitCompleted(t, appImage, 8*time.Minute)
	const v2 = "ghcr.io/acme/web:v2"
	f.SetImage(t, v2)
	ro := f.WaitCompleted(t, v2, 8*time.Minute)
	if len(ro.Status.History) != 2 || ro.Status.Steps != 2 {
		t.Errorf("history %d revisions, %d steps; want 2 and 2", len(ro.Status.History), ro.Status.Steps)
	}
	// The status lists 1,000 cells; the cell table went through Git at each step of v2 (10 %
	// of the cells, then all of them) and was emptied when the rollout completed.
	if len(ro.Status.Cells) != 1000 || ro.Status.CellTable != nil || ro.Status.TotalCells != cells {
		t.Errorf("a completed rollout over %d cells lists %d (total %d) and names table %+v", cells, len(ro.Status.Cells), ro.Status.TotalCells, ro.Status.CellTable)
	}
	table, err := gitIn(f, "log", "--format=%s", "rollouts/"+ns+"/"+appName)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"at step 1/2, 120 cells", "at step 2/2, 1200 cells", ", 0 cells"} {
		if !strings.Contains(table, want) {
			t.Errorf("the cell table's history has no commit %q:\n%s", want, table)
		}
	}
	if files, err := gitIn(f, "ls-tree", "-r", "rollouts/"+ns+"/"+appName); err != nil || files != "" {
		t.Errorf("a completed rollout's table is empty: %q %v", files, err)
	}
	// The first deploy went straight to the last step (one commit per branch); v2's step 1
	// reached the first 10 % of the cells by name, step 2 every cell.
	heads, err := f.Git.BranchHeads("gitops", hubv1alpha1.CellBranchPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != cells {
		t.Fatalf("%d cell branches, want %d", len(heads), cells)
	}
	wrong := 0
	for branch := range heads {
		want := "2"
		var i int
		if _, err := fmt.Sscanf(strings.TrimPrefix(branch, hubv1alpha1.CellBranchPrefix), "cell-%05d", &i); err == nil && i < cells/10 {
			want = "3"
		}
		n, err := countCommits(f, branch)
		if err != nil {
			t.Fatal(err)
		}
		if n != want && wrong < 5 {
			t.Errorf("%s has %s commits, want %s", branch, n, want)
			wrong++
		}
	}
	hubHeap := f.PeakHubHeap()
	t.Logf("peak heap: the hub's %s (resident %s), the simulated agents' process %s", MiB(hubHeap), MiB(f.HubPeakRSS()), MiB(f.PeakHeap()))
	t.Logf("slowest intake poll: %s over %d status repositories and the hub's own; the Git server packed refs %d times", f.SlowestIntakePoll().Round(time.Millisecond), len(f.shards), f.Git.RefPacks())
	if f.Git.RefPacks() == 0 {
		t.Errorf("the Git server never packed the fleet repository's refs; a step's write of 1,200 branches leaves them loose")
	}
	// About 80-90 MiB here; a regression that holds the fleet more than once (a copy of every
	// Cell per reconcile, a pack held whole) shows long before twice that.
	if hubHeap > 192<<20 {
		t.Errorf("the hub's heap peaked at %s with %d cells; want under 192 MiB", MiB(hubHeap), cells)
	}
	if hubHeap == 0 || f.SlowestIntakePoll() == 0 {
		t.Errorf("the hub's metrics were never read: heap %d bytes, slowest intake poll %s", hubHeap, f.SlowestIntakePoll())
	}
	// What the agents cost on their own: the hub stops, they go on.
	f.StopHub()
	idle := f.Idle(10 * time.Second)
	t.Logf("idle for 10 s: %d polls, %d heartbeats; %.0f bytes, %.2f listings and %.2f requests per idle poll; %.0f bytes and %.2f requests per heartbeat",
		idle.Polls, idle.Beats, idle.PollBytes, idle.PollListings, idle.PollRequests, idle.BeatBytes, idle.BeatRequests)
	// One listing per poll, and no other request (the server speaks v2: no capability
	// advertisement before it); polls in flight at the window's edges make it a hair off.
	if math.Abs(idle.PollListings-1) > 0.02 || math.Abs(idle.PollRequests-1) > 0.02 {
		t.Errorf("an idle poll made %.3f ref listings in %.3f requests; want one listing, one request", idle.PollListings, idle.PollRequests)
	}
	if idle.Polls == 0 {
		t.Fatal("no agent polled")
	}
	if idle.PollBytes > 1024 {
		t.Errorf("an idle poll moved %.0f bytes; want at most 1 KB", idle.PollBytes)
	}
	total := f.Git.Requests()
	perPush := float64(total.PushBytes) / float64(f.beats.Load())
	t.Logf("every report push of the run: %.0f bytes on average (%d pushes)", perPush, f.beats.Load())
	if perPush > 8*1024 {
		t.Errorf("a report push moved %.0f bytes on average; want at most 8 KB", perPush)
	}
	// Every agent has pushed before: a heartbeat is one request, without receive-pack's
	// advertisement of the shard's refs.
	if idle.Beats == 0 {
		t.Error("no agent heartbeated in the idle window (every heartbeat falls due as it opens)")
	} else if idle.BeatBytes > 2048 || math.Abs(idle.BeatRequests-1) > 0.05 {
		t.Errorf("an idle heartbeat moved %.0f bytes in %.2f requests; want one request of at most 2 KB (a signed report, no advertisement)", idle.BeatBytes, idle.BeatRequests)
	}
}

func countCommits(f *Fleet, branch string) (string, error) {
	return gitIn(f, "rev-list", "--count", branch)
}
