package fleet

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// BenchmarkFleet runs one hub against a simulated fleet (status refs in shards of 64 cells) and
// rolls one app placed on every cell out and then to a second revision: a two-step canary at
// 1,000 cells. CELLSYNC_FLEET_CELLS picks another size (above 1,000 the Rollout keeps its cell
// table in Git); at 10,000 a run takes about 15 minutes here, most of it the Git server
// starting git processes for each of the agents' requests. The hub runs as shipped, its binary
// in a process of its own. Printed: the wall time of the second revision from the change to
// every cell ready; the CPU of the hub, of the simulated agents (this process) and of the Git
// server over that time; the hub's peak heap and resident memory, and this process's peak heap;
// the slowest intake poll; bytes, listings and requests per agent per idle poll, bytes and
// requests per heartbeat (and per report push over the whole run, first pushes included); and
// the Git host's egress for 10,000 and 100,000 cells polling and heartbeating every 30 s.
func BenchmarkFleet(b *testing.B) {
	sizes := []int{1000}
	if s := os.Getenv("CELLSYNC_FLEET_CELLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("CELLSYNC_FLEET_CELLS=%q: %v", s, err)
		}
		sizes = []int{n}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("%dCells", n), func(b *testing.B) {
			for range b.N {
				benchFleet(b, n)
			}
		})
	}
}

func benchFleet(b *testing.B, n int) {
	// A round of the simulated agents over 10,000 cells takes a few minutes here, and much longer
	// on a Git server that leaves refs loose: heartbeats and the hub's threshold are set well
	// above it. The hub polls the status repositories at its shipped default, every 10 s.
	o := Options{Cells: n, ShardSize: 64, Canary: true, Workers: 4, PollEvery: 2 * time.Second, Heartbeat: time.Minute,
		StatusInterval: 10 * time.Second}
	if n > 1000 {
		o.Heartbeat, o.StaleAfter = time.Hour, 2*time.Hour
	}
	// A round of the agents bounds each step: a few minutes at 10,000 cells here; the wait leaves
	// room for a machine many times slower.
	wait := 30 * time.Minute
	if n > 1000 {
		wait = time.Duration(n/1000) * 6 * time.Minute
	}
	f := Start(b, o)
	f.Deploy(b)
	f.WaitCompleted(b, appImage, wait)
	cpu0, git0 := CPU()
	hub0, req0 := f.HubCPU(), f.Git.Requests().HTTP
	start := time.Now()
	f.SetImage(b, "ghcr.io/acme/web:v2")
	f.WaitCompleted(b, "ghcr.io/acme/web:v2", wait)
	wall := time.Since(start)
	cpu1, git1 := CPU()
	hub1, hubRSS, req1 := f.HubCPU(), f.HubPeakRSS(), f.Git.Requests().HTTP
	f.StopHub()
	idle := f.Idle(10 * time.Second)
	total := f.Git.Requests()
	perBeat := float64(total.PushBytes) / float64(f.beats.Load())
	b.ReportMetric(wall.Seconds(), "s-rollout")
	b.ReportMetric((hub1 - hub0).Seconds(), "s-hub-cpu")
	b.ReportMetric((cpu1 - cpu0).Seconds(), "s-agents-cpu")
	b.ReportMetric((git1 - git0).Seconds(), "s-git-cpu")
	b.ReportMetric(float64(req1-req0), "git-requests")
	b.ReportMetric(float64((git1-git0).Milliseconds())/float64(max(req1-req0, 1)), "ms-git-cpu/request")
	b.ReportMetric(float64(f.PeakHubHeap())/(1<<20), "MiB-hub-heap")
	b.ReportMetric(float64(hubRSS)/(1<<20), "MiB-hub-rss")
	b.ReportMetric(float64(f.PeakHeap())/(1<<20), "MiB-agents-heap")
	b.ReportMetric(f.SlowestIntakePoll().Seconds(), "s-slowest-intake-poll")
	b.ReportMetric(idle.PollBytes, "B/poll")
	b.ReportMetric(idle.PollListings, "listings/poll")
	b.ReportMetric(idle.PollRequests, "requests/poll")
	b.ReportMetric(perBeat, "B/report-push")
	b.ReportMetric(idle.BeatBytes, "B/heartbeat")
	b.ReportMetric(idle.BeatRequests, "requests/heartbeat")
	b.ReportMetric(Egress(10_000, idle.PollBytes, idle.BeatBytes, 30*time.Second)/1e6, "MB/s-egress-10k")
	b.ReportMetric(Egress(100_000, idle.PollBytes, idle.BeatBytes, 30*time.Second)/1e6, "MB/s-egress-100k")
	b.ReportMetric(2, "canary-steps")
	f.Stop()
}
