package hub_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	. "github.com/onsi/gomega"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/cellsync/cellsync/agent/source"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/render"
)

// cells stands in for the agents of a test's cells: it pushes StatusReports to status/<cell> in
// the documented format, with the same code the agent uses, and, like an agent, pushes each
// cell's last report again every second with a fresh heartbeat (unless the test pinned an old
// heartbeat to make the cell stale).
type cells struct {
	t   *testing.T
	url string

	mu   sync.Mutex
	last map[string]lastReport
}

type lastReport struct {
	app    *hubv1alpha1.ServerlessApp
	report cellReport
}

func newCells(t *testing.T) *cells {
	t.Helper()
	c := &cells{t: t, url: repoURL, last: map[string]lastReport{}}
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			c.mu.Lock()
			for _, l := range c.last {
				if l.report.heartbeat.IsZero() {
					_ = c.push(l.app, l.report)
				}
			}
			c.mu.Unlock()
		}
	}()
	return c
}

// cellReport is what one cell says about one app.
type cellReport struct {
	cell      string
	applied   string
	revision  string
	ready     bool
	message   string
	heartbeat time.Time
	analyses  []agentv1alpha1.AnalysisReport
}

func (c *cells) report(app *hubv1alpha1.ServerlessApp, reports ...cellReport) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range reports {
		NewWithT(c.t).Expect(c.push(app, r)).To(Succeed())
		c.last[r.cell] = lastReport{app: app.DeepCopy(), report: r}
	}
}

func (c *cells) push(app *hubv1alpha1.ServerlessApp, r cellReport) error {
	if r.heartbeat.IsZero() {
		r.heartbeat = time.Now()
	}
	{
		rep := agentv1alpha1.StatusReport{
			APIVersion: agentv1alpha1.GroupVersion.String(), Kind: agentv1alpha1.StatusReportKind,
			Cell: r.cell, AgentVersion: "test", HeartbeatTime: metav1.NewTime(r.heartbeat.UTC().Truncate(time.Second)),
			AppliedCommit: r.applied, AttemptedCommit: r.applied,
			Conditions: []metav1.Condition{{Type: meta.ReadyCondition, Status: metav1.ConditionTrue, Reason: "ReconciliationSucceeded", Message: "Applied", LastTransitionTime: metav1.Now()}},
			Apps: []agentv1alpha1.AppReport{{
				App: app.Name, AppNamespace: app.Namespace, Namespace: "apps", Name: app.Name, Kind: "Service",
				Ready: r.ready, Message: r.message, LatestReadyRevision: r.revision, LatestCreatedRevision: r.revision,
			}},
		}
		if !r.ready {
			rep.Apps[0].Reason = "RevisionFailed"
		}
		rep.Analyses = r.analyses
		b, err := yaml.Marshal(rep)
		if err != nil {
			return err
		}
		_, err = source.PushReport(context.Background(), c.url, &githttp.BasicAuth{Username: gitUser, Password: gitPassword},
			agentv1alpha1.StatusRefPrefix+r.cell, agentv1alpha1.StatusReportFile, b, time.Now(), nil)
		return err
	}
}

// readyAt reports every named cell as having applied its branch head, the app ready at revision.
func (c *cells) readyAt(app *hubv1alpha1.ServerlessApp, revision string, names ...string) {
	c.t.Helper()
	h := heads(c.t)
	for _, n := range names {
		c.report(app, cellReport{cell: n, applied: h["cells/"+n], revision: revision, ready: true})
	}
}

func canaryApp(ns, name, placement, image string, steps ...hubv1alpha1.CanaryStep) *hubv1alpha1.ServerlessApp {
	return newApp(ns, name, placement, image, func(a *hubv1alpha1.ServerlessApp) {
		a.Spec.Strategy = &hubv1alpha1.Strategy{Type: hubv1alpha1.StrategyCanary, Canary: &hubv1alpha1.CanaryStrategy{Steps: steps}}
	})
}

func step(weight int32, names ...string) hubv1alpha1.CanaryStep {
	if len(names) == 0 {
		return hubv1alpha1.CanaryStep{Cells: hubv1alpha1.StepCells{Percent: ptr.To[int32](100)}, Weight: weight}
	}
	return hubv1alpha1.CanaryStep{Cells: hubv1alpha1.StepCells{Names: names}, Weight: weight}
}

// setImage changes the app's image and returns the new revision.
func setImage(t *testing.T, app *hubv1alpha1.ServerlessApp, image string) string {
	t.Helper()
	g := NewWithT(t)
	g.Eventually(func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), app); err != nil {
			return err
		}
		app.Spec.Template.Image = image
		return k8s.Update(context.Background(), app)
	}, timeout, poll).Should(Succeed())
	return render.AppRevision(app)
}

func rolloutOf(app *hubv1alpha1.ServerlessApp) *hubv1alpha1.Rollout {
	return &hubv1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: app.Namespace, Name: app.Name}}
}

func waitStep(t *testing.T, app *hubv1alpha1.ServerlessApp, display string, phase hubv1alpha1.RolloutPhase, weight int32) *hubv1alpha1.Rollout {
	t.Helper()
	return waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.StepDisplay).To(Equal(display), "message: %s", r.Status.Message)
		g.Expect(r.Status.Phase).To(Equal(phase), "message: %s", r.Status.Message)
		g.Expect(r.Status.CanaryWeight).To(Equal(weight))
	})
}

func waitCompleted(t *testing.T, app *hubv1alpha1.ServerlessApp, revision string) *hubv1alpha1.Rollout {
	t.Helper()
	return waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhaseCompleted), "message: %s", r.Status.Message)
		g.Expect(r.Status.StableRevision).To(Equal(revision))
		g.Expect(apimeta.IsStatusConditionTrue(r.Status.Conditions, meta.ReadyCondition)).To(BeTrue())
	})
}

// target is one expected traffic target.
type target struct {
	revision string
	percent  int64
	tag      string
}

// expectTraffic builds the cell branch with kustomize and checks the Knative Service's traffic.
func expectTraffic(t *testing.T, cell, app string, want ...target) {
	t.Helper()
	g := NewWithT(t)
	svc := build(t, "cells/"+cell)["Service/"+app]
	g.Expect(svc).NotTo(BeNil(), "cell %s has no Knative Service %s", cell, app)
	traffic, _, _ := unstructured.NestedSlice(svc.Object, "spec", "traffic")
	got := make([]target, 0, len(traffic))
	for _, tr := range traffic {
		m := tr.(map[string]any)
		tag, _ := m["tag"].(string)
		got = append(got, target{revision: fmt.Sprint(m["revisionName"]), percent: toInt64(m["percent"]), tag: tag})
	}
	g.Expect(got).To(Equal(want), "traffic in cell %s", cell)
}

func toInt64(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case float64:
		return int64(n)
	}
	return -1
}

// tree is a commit's tree hash on the Git server.
func tree(t *testing.T, rev string) string {
	t.Helper()
	out, err := gitServer.RevParse(repoName, rev+"^{tree}")
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return out
}

func parent(t *testing.T, rev string) string {
	t.Helper()
	out, err := gitServer.RevParse(repoName, rev+"^")
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return out
}

// cellHeads is the heads of the cell branches (the status refs move with every heartbeat).
func cellHeads(t *testing.T) map[string]string {
	t.Helper()
	h, err := gitServer.BranchHeads(repoName, hubv1alpha1.CellBranchPrefix)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return h
}

// expectUnchanged checks that the cells' branches still have the given heads (so every byte is
// the same).
func expectUnchanged(t *testing.T, before map[string]string, names ...string) {
	t.Helper()
	now := heads(t)
	for _, n := range names {
		NewWithT(t).Expect(now["cells/"+n]).To(Equal(before["cells/"+n]), "cell %s is outside the step's mask and must keep its bytes", n)
	}
}
