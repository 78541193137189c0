// Command demo is cellsync's quickstart (`make demo`): it starts on this machine a Git
// smart-HTTP server, a hub apiserver with the hub, and three member apiservers each with an agent,
// pushes a sample app to main with git, and walks a canary to 100 % while printing its progress;
// then, with Debian's prometheus installed, a canary measured by an error-rate analysis passes
// and one with 20 % synthetic errors in cell-1 aborts.
//
// Knative Serving's controllers cannot run here, so each member cluster has the real Knative
// Serving CRDs and kwok sets the Knative Service status as Knative would (Ready, revisions,
// traffic). Everything else is the real thing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

func main() {
	workdir := flag.String("workdir", filepath.Join("tmp", "demo"), "where kubeconfigs, the repo clone and the ready file go")
	once := flag.Bool("once", false, "exit 0 as soon as the canary completed (non-zero on failure)")
	poll := flag.Duration("poll", 2*time.Second, "agent, source and status poll interval")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up when the canary has not completed after this long")
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard), zap.Level(zapcore.ErrorLevel)))
	if err := run(*workdir, *once, *poll, *timeout, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(workdir string, once bool, poll, timeout time.Duration, out io.Writer) error {
	abs, err := filepath.Abs(workdir)
	if err != nil {
		return err
	}
	// Only what an earlier demo left is removed: --workdir may name a folder with other files.
	for _, pattern := range []string{"ready", "*.kubeconfig", "repo", "agents", "logs"} {
		old, _ := filepath.Glob(filepath.Join(abs, pattern))
		for _, p := range old {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	// Signals are caught before anything starts: SIGINT, SIGTERM, SIGHUP and SIGPIPE (a closed
	// terminal or pipe) stop the demo cleanly at any point, so no apiserver, etcd, kwok, hub or
	// agent is left behind.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	defer cancel()
	say("cellsync demo: everything runs on this machine; work directory %s", abs)
	say("Knative status in the member clusters is simulated by kwok (real Knative Serving CRDs, no Knative controllers)")
	w, err := testenv.StartWorld(testenv.WorldOptions{Members: 3, Poll: poll, StaleAfter: 6 * poll, Dir: abs, Progress: say,
		Processes: true, Context: ctx})
	if err != nil {
		return err
	}
	defer func() {
		say("stopping the clusters, the hub, the agents and the Git server")
		w.Stop()
	}()
	say("the hub and the agents run as their own processes with their shipped ServiceAccounts; logs in %s", w.LogDir())

	say("pushing apps/web.yaml (a CellPlacement over the three cells and ServerlessApp web, image v1) to main with git")
	if _, err := w.Source.Commit("Add web", map[string]string{"apps/web.yaml": testenv.SampleApp("ghcr.io/knative/helloworld-go:v1", time.Minute)}); err != nil {
		return err
	}
	say("first deploy: there is no stable revision yet, so the rollout goes straight to 100 %% everywhere")
	if err := watch(ctx, w, "", false, timeout, out); err != nil {
		return err
	}
	first := rolloutOf(ctx, w)
	say("pushing the v2 image to main: a canary [cell-1 20 %%] -> [cell-1, cell-2 50 %%] -> [all 100 %%]")
	if _, err := w.Source.Commit("web v2", map[string]string{"apps/web.yaml": testenv.SampleApp("ghcr.io/knative/helloworld-go:v2", time.Minute)}); err != nil {
		return err
	}
	if err := watch(ctx, w, first.Status.StableRevision, false, timeout, out); err != nil {
		return err
	}
	say("the canary completed in every cell")
	stop, err := analysisScene(ctx, w, timeout, say, out)
	defer stop()
	if err != nil {
		return err
	}
	explore(w, out)
	if err := os.WriteFile(filepath.Join(abs, "ready"), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return err
	}
	if once {
		return nil
	}
	say("running until Ctrl-C; push more changes to %s and watch them roll out", w.Source.Dir)
	<-ctx.Done()
	return nil
}

// analysisScene gives each member its own Prometheus, scraping synthetic per-revision request
// metrics, and ships two versions measured by an error-rate analysis at every step: v3 passes,
// v4 answers 20 % of its requests with 5xx in cell-1 and its rollout aborts. Without Debian's
// prometheus it says so and skips. stop ends the Prometheus servers and exporters.
func analysisScene(ctx context.Context, w *testenv.World, timeout time.Duration, say func(string, ...any), out io.Writer) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	if !testenv.HasPrometheus() {
		say("Debian's prometheus is not installed (apt-get install prometheus): skipping the canary analysis scene")
		return stop, nil
	}
	say("canary analysis: each member gets its own Prometheus, scraping per-revision request counters in the shape Knative's queue-proxy exports; no Knative data plane runs here, so the requests and their errors are synthetic")
	exporters := map[string]*testenv.Exporter{}
	for _, m := range w.Members {
		// The cell's owner points its agent at the cell's Prometheus; the hub cannot.
		cm, err := m.StartCellMetrics(ctx)
		if err != nil {
			return stop, err
		}
		stops = append(stops, cm.Stop)
		exporters[m.Cell] = cm.Exporter
	}
	ship := func(image string, errorRates map[string]float64) (string, error) {
		prev := rolloutOf(ctx, w).Status.StableRevision
		if _, err := w.Source.Commit("web "+image, map[string]string{"apps/web.yaml": testenv.AnalysedApp("ghcr.io/knative/helloworld-go:"+image, time.Minute)}); err != nil {
			return "", err
		}
		for ctx.Err() == nil {
			app := &hubv1alpha1.ServerlessApp{}
			if err := w.HubClient.Get(ctx, client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: "web"}, app); err == nil && app.Status.Revision != "" && app.Status.Revision != prev {
				for cell, exp := range exporters {
					exp.SetErrorRate(app.Status.Revision, errorRates[cell])
				}
				return prev, nil
			}
			time.Sleep(200 * time.Millisecond)
		}
		return "", errors.New("interrupted")
	}
	say("pushing v3 with AnalysisTemplate error-rate (the 5xx share of the canary's requests, at most 5 %%), measured by every cell's agent at every step")
	prev, err := ship("v3", nil)
	if err != nil {
		return stop, err
	}
	if err := watch(ctx, w, prev, false, timeout, out); err != nil {
		return stop, err
	}
	say("v3 passed its analysis in every cell it reached")
	say("pushing v4, whose synthetic error rate is 20 %% in cell-1: its analysis fails there and the rollout aborts")
	if prev, err = ship("v4", map[string]float64{"cell-1": 0.2}); err != nil {
		return stop, err
	}
	if err := watch(ctx, w, prev, true, timeout, out); err != nil {
		return stop, err
	}
	say("the rollout aborted on its analysis: %s", rolloutOf(ctx, w).Status.Message)
	for deadline := time.Now().Add(timeout); ; time.Sleep(500 * time.Millisecond) {
		back := true
		for _, m := range w.Members {
			back = back && !strings.Contains(traffic(ctx, m), "canary")
		}
		if back {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return stop, fmt.Errorf("the cells did not go back to v3 within %s", timeout)
		}
	}
	say("every cell runs v3 alone again (kubectl cells status web -n shop shows each cell's measurements)")
	return stop, nil
}

// watch prints the progress table whenever it changes, until the rollout of a revision other
// than prev completed in every cell, or, with abort, until it aborted.
func watch(ctx context.Context, w *testenv.World, prev string, abort bool, timeout time.Duration, out io.Writer) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		if err := ctx.Err(); err != nil {
			return errors.New("interrupted")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the rollout did not complete within %s", timeout)
		}
		ro := rolloutOf(ctx, w)
		table := progress(ctx, w, ro)
		if table != last {
			fmt.Fprint(out, table)
			last = table
		}
		switch {
		case ro.Status.Phase == hubv1alpha1.PhaseAborted && abort && ro.Status.CanaryRevision != prev:
			return nil
		case ro.Status.Phase == hubv1alpha1.PhaseAborted && !abort:
			return fmt.Errorf("the rollout aborted: %s", ro.Status.Message)
		case ro.Status.Phase == hubv1alpha1.PhaseCompleted && ro.Status.StableRevision != prev && abort:
			return fmt.Errorf("the rollout completed, though it should have aborted on its analysis")
		case ro.Status.Phase == hubv1alpha1.PhaseCompleted && ro.Status.StableRevision != prev && ro.Status.CellsDisplay == "3/3/3":
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func rolloutOf(ctx context.Context, w *testenv.World) *hubv1alpha1.Rollout {
	ro := &hubv1alpha1.Rollout{}
	_ = w.HubClient.Get(ctx, client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: "web"}, ro)
	return ro
}

var knativeService = schema.GroupVersionKind{Group: "serving.knative.dev", Version: "v1", Kind: "Service"}

// progress is the rollout line and one line per cell: what the hub wants there and what the
// member cluster's Knative Service says.
func progress(ctx context.Context, w *testenv.World, ro *hubv1alpha1.Rollout) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nrollout shop/web  step %s  phase %s  canary %d%%  cells %s (updated/ready/total)",
		dash(ro.Status.StepDisplay), dash(string(ro.Status.Phase)), ro.Status.CanaryWeight, dash(ro.Status.CellsDisplay))
	if ro.Status.Analysis != "" {
		fmt.Fprintf(&b, "  analysis %s", ro.Status.Analysis)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  CELL\tCLUSTER\tIN STEP\tWEIGHT\tREVISION (reported)\tTRAFFIC (member cluster)\tREADY\tANALYSIS")
	byCell := map[string]hubv1alpha1.RolloutCell{}
	for _, c := range ro.Status.Cells {
		byCell[c.Cell] = c
	}
	members := append([]*testenv.Member(nil), w.Members...)
	sort.Slice(members, func(i, j int) bool { return members[i].Cell < members[j].Cell })
	for _, m := range members {
		c := byCell[m.Cell]
		inStep, weight := "-", "-"
		if c.Canary {
			inStep, weight = "yes", fmt.Sprintf("%d%%", c.Weight)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%t\t%s\n", m.Cell, m.Name, inStep, weight, dash(c.Revision), traffic(ctx, m), c.Ready, analysisOf(c))
	}
	_ = tw.Flush()
	return b.String()
}

// analysisOf is a cell's analysis of the step: its verdict and each metric's last value.
func analysisOf(c hubv1alpha1.RolloutCell) string {
	if c.Analysis == nil || !c.Canary {
		return "-"
	}
	s := string(c.Analysis.Phase)
	for _, m := range c.Analysis.Metrics {
		if m.Value != "" {
			s += fmt.Sprintf(" %s=%s", m.Name, m.Value)
		}
	}
	return s
}

func traffic(ctx context.Context, m *testenv.Member) string {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(knativeService)
	if err := m.Client.Get(ctx, client.ObjectKey{Namespace: testenv.WorldCellNamespace, Name: "web"}, u); err != nil {
		return "-"
	}
	ts, _, _ := unstructured.NestedSlice(u.Object, "status", "traffic")
	parts := make([]string, 0, len(ts))
	for _, t := range ts {
		tm := t.(map[string]any)
		p := fmt.Sprintf("%v=%v%%", tm["revisionName"], tm["percent"])
		if tag, ok := tm["tag"].(string); ok && tag != "" {
			p += "(" + tag + ")"
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func explore(w *testenv.World, out io.Writer) {
	fmt.Fprintf(out, `
Explore it (in another terminal, while the demo runs):

  export KUBECONFIG=%[1]s
  kubectl get cells,cellplacements,serverlessapps,appsources -A
  kubectl get rollouts.hub.cellsync.io -n shop          # or: kubectl get csro -n shop
  kubectl get rolloutsteps -n shop
  go build -o bin/kubectl-cells ./hub/cmd/kubectl-cells && PATH=$PWD/bin:$PATH kubectl cells status web -n shop

  kubectl --kubeconfig %[2]s get services.serving.knative.dev -n apps -o yaml   # a member cluster
  git -C %[3]s fetch -q origin '+refs/heads/*:refs/remotes/origin/*'
  git -C %[3]s log --oneline origin/cells/cell-1                                  # a cell branch
  git -C %[3]s show origin/status/cell-1:status.yaml                              # a cell's report

  Push a change: edit %[3]s/apps/web.yaml, then git -C %[3]s commit -am change && git -C %[3]s push origin HEAD:main

`, w.HubKubeconfig, w.Members[0].Kubeconfig, w.Source.Dir)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
