// Benchmarks of the hub's hot paths, against the targets in docs/design.md. Run with `make bench`.
package hub_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/cellbranch"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/render"
)

func benchCells(n int) []*hubv1alpha1.Cell {
	out := make([]*hubv1alpha1.Cell, n)
	for i := range out {
		out[i] = &hubv1alpha1.Cell{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cell-%04d", i), Labels: map[string]string{hubv1alpha1.LabelRegion: "eu"}},
			Spec:       hubv1alpha1.CellSpec{Cluster: fmt.Sprintf("member-%03d", i/10), Namespaces: []string{"apps"}},
		}
	}
	return out
}

func benchApp(name, image string) *hubv1alpha1.ServerlessApp {
	return &hubv1alpha1.ServerlessApp{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team", Generation: 1},
		Spec: hubv1alpha1.ServerlessAppSpec{
			PlacementRef: corev1.LocalObjectReference{Name: "all"},
			Template:     hubv1alpha1.RevisionTemplate{Image: image, Env: []corev1.EnvVar{{Name: "TARGET", Value: "bench"}}},
			Domains:      []string{"{app}.sls-{cluster}.example.com"},
		},
	}
}

func bareRepo(b *testing.B) string {
	dir := filepath.Join(b.TempDir(), "gitops.git")
	if out, err := exec.Command("git", "init", "--bare", "-q", dir).CombinedOutput(); err != nil {
		b.Fatalf("git init: %v: %s", err, out)
	}
	return "file://" + dir
}

// renderAll renders one app for every cell and returns the edit that puts it in their branches.
func renderAll(b *testing.B, app *hubv1alpha1.ServerlessApp, cells []*hubv1alpha1.Cell) gitstore.Update {
	rendered := make(map[string]*render.RenderedApp, len(cells))
	metas := make(map[string]cellbranch.CellMeta, len(cells))
	branches := make([]string, 0, len(cells))
	for _, c := range cells {
		r, err := render.Render(render.Input{App: app, Cell: c})
		if err != nil {
			b.Fatal(err)
		}
		rendered[c.BranchName()] = r
		metas[c.BranchName()] = cellbranch.CellMeta{Cell: c.Name, Cluster: c.Spec.Cluster}
		branches = append(branches, c.BranchName())
	}
	key := cellbranch.AppKey{Namespace: app.Namespace, Name: app.Name}
	return gitstore.Update{
		Message:  "bench",
		Branches: branches,
		Edit: func(branch string, files *gitstore.Tree) error {
			return cellbranch.PutApp(files, metas[branch], key, rendered[branch], "")
		},
	}
}

// One app change fanned out to 1,000 cells: render + 1,000 commits + one atomic push.
// Target: < 2 s per change.
func BenchmarkFanOut1000Cells(b *testing.B) {
	cells := benchCells(1000)
	store, err := gitstore.New(gitstore.Options{URL: bareRepo(b)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := store.Apply(ctx, renderAll(b, benchApp("hello", "ghcr.io/acme/hello:v0"), cells)); err != nil {
		b.Fatal(err)
	}
	i, commits, pushes := 0, 0, 0
	for b.Loop() {
		i++
		res, err := store.Apply(ctx, renderAll(b, benchApp("hello", fmt.Sprintf("ghcr.io/acme/hello:v%d", i)), cells))
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Commits) != len(cells) {
			b.Fatalf("want %d commits, got %d", len(cells), len(res.Commits))
		}
		commits += len(res.Commits)
		pushes += res.Attempts
	}
	b.ReportMetric(float64(commits)/float64(b.N), "commits/op")
	b.ReportMetric(float64(pushes)/float64(b.N), "pushes/op")
}

// A reconcile with nothing changed: the remote is read, every branch edited, nothing committed.
// Target: 0 commits, 0 pushes.
func BenchmarkNoopReconcile1000Cells(b *testing.B) {
	cells := benchCells(1000)
	store, err := gitstore.New(gitstore.Options{URL: bareRepo(b)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	app := benchApp("hello", "ghcr.io/acme/hello:v1")
	if _, err := store.Apply(ctx, renderAll(b, app, cells)); err != nil {
		b.Fatal(err)
	}
	commits, pushes := 0, 0
	for b.Loop() {
		res, err := store.Apply(ctx, renderAll(b, app, cells))
		if err != nil {
			b.Fatal(err)
		}
		commits += len(res.Commits)
		pushes += res.Attempts
	}
	if commits != 0 || pushes != 0 {
		b.Fatalf("a no-op reconcile made %d commits and %d pushes", commits, pushes)
	}
	b.ReportMetric(float64(commits)/float64(b.N), "commits/op")
	b.ReportMetric(float64(pushes)/float64(b.N), "pushes/op")
}

// 200 apps × 100 cells, rendered in full and held, as a hub rebuilding every branch would.
// Target: < 30 s, < 1 GiB heap.
func BenchmarkFullRender200Apps100Cells(b *testing.B) {
	cells := benchCells(100)
	apps := make([]*hubv1alpha1.ServerlessApp, 200)
	for i := range apps {
		apps[i] = benchApp(fmt.Sprintf("app-%03d", i), fmt.Sprintf("ghcr.io/acme/app-%03d:v1", i))
	}
	var peak uint64
	for b.Loop() {
		out := make([]*render.RenderedApp, 0, len(apps)*len(cells))
		for _, a := range apps {
			if err := render.ValidateApp(a); err != nil {
				b.Fatal(err)
			}
			for _, c := range cells {
				r, err := render.Render(render.Input{App: a, Cell: c})
				if err != nil {
					b.Fatal(err)
				}
				out = append(out, r)
			}
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > peak {
			peak = ms.HeapInuse
		}
		runtime.KeepAlive(out)
	}
	b.ReportMetric(float64(peak)/(1<<20), "MiB-heap")
	b.ReportMetric(float64(len(apps)*len(cells)), "renders/op")
}
