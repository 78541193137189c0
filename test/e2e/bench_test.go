package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

const benchApp = `apiVersion: hub.cellsync.io/v1alpha1
kind: CellPlacement
metadata: {name: bench, namespace: shop}
spec:
  cellSelector: {matchLabels: {cellsync.io/env: demo}}
---
apiVersion: hub.cellsync.io/v1alpha1
kind: ServerlessApp
metadata: {name: bench, namespace: shop}
spec:
  placementRef: {name: bench}
  template:
    image: ghcr.io/knative/helloworld-go:v1
    env:
    - {name: RUN, value: "%d"}
`

// BenchmarkPushToStatus measures the end-to-end figure of docs/design.md: a git push to main until every
// one of the three cells applied it and the hub's status shows it (the app ready in every cell
// at the new revision, each Cell's applied commit equal to its branch head), at a 2 s poll
// interval for the source, the agents and the status refs. It reports the median of b.N runs.
func BenchmarkPushToStatus(b *testing.B) {
	ctx := context.Background()
	var runs []time.Duration
	prev := ""
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := world.Source.Commit(fmt.Sprintf("bench %d", i), map[string]string{"apps/bench.yaml": fmt.Sprintf(benchApp, time.Now().UnixNano())}); err != nil {
			b.Fatal(err)
		}
		for {
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("run %d: the change did not reach every cell and the hub within 2 minutes", i)
			}
			if rev, ok := applied(ctx, prev); ok {
				prev = rev
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		runs = append(runs, time.Since(start))
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i] < runs[j] })
	b.ReportMetric(runs[len(runs)/2].Seconds(), "s-median")
	b.ReportMetric(runs[len(runs)-1].Seconds(), "s-max")
	b.ReportMetric(0, "ns/op")
}

// applied reports whether the hub shows the bench app at a revision other than prev, ready in
// all three cells, with every Cell's applied commit at its branch head.
func applied(ctx context.Context, prev string) (string, bool) {
	app := &hubv1alpha1.ServerlessApp{}
	if err := world.HubClient.Get(ctx, client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: "bench"}, app); err != nil {
		return "", false
	}
	rev := app.Status.Revision
	if !strings.HasPrefix(rev, "bench-") || rev == prev || app.Status.ReadyCells != 3 || len(app.Status.CellStatuses) != 3 {
		return "", false
	}
	for _, s := range app.Status.CellStatuses {
		if s.Revision != rev || !s.Ready {
			return "", false
		}
	}
	heads, err := world.Git.Heads(testenv.WorldRepo)
	if err != nil {
		return "", false
	}
	for _, m := range world.Members {
		cell := &hubv1alpha1.Cell{}
		if err := world.HubClient.Get(ctx, client.ObjectKey{Name: m.Cell}, cell); err != nil {
			return "", false
		}
		if cell.Status.LastAppliedCommit != heads[hubv1alpha1.CellBranchPrefix+m.Cell] {
			return "", false
		}
	}
	return rev, true
}
