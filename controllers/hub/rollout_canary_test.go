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
	corev1 "k8s.io/api/core/v1"
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
	t    *testing.T
	repo *source.Repo

	mu   sync.Mutex
	last map[string]lastReport
}

type lastReport struct {
	app    *hubv1alpha1.ServerlessApp
	report cellReport
}

func newCells(t *testing.T) *cells {
	t.Helper()
	repo, err := source.Open(t.TempDir(), repoURL, "unused")
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	c := &cells{t: t, repo: repo, last: map[string]lastReport{}}
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
		_, err = c.repo.PushReport(context.Background(), &githttp.BasicAuth{Username: gitUser, Password: gitPassword},
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

// A change walks [A 10 %] → [A 50 %] → [A, B 50 %] → [all 100 %], each step a RolloutStep,
// each gate passed only by exact commits, Ready, fresh heartbeats.
func TestCanaryWalksSteps(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "walk", "")
	for _, n := range []string{"rw-a", "rw-b", "rw-c", "rw-d"} {
		newCell(t, n, "member-"+n, map[string]string{hubv1alpha1.LabelRegion: "walk"})
	}
	all := []string{"rw-a", "rw-b", "rw-c", "rw-d"}
	bake := step(50, "rw-a")
	bake.Pause = &hubv1alpha1.StepPause{Duration: &metav1.Duration{Duration: 3 * time.Second}}
	app := canaryApp("walk", "web", "p", "ghcr.io/acme/web:v1",
		step(10, "rw-a"), bake, step(50, "rw-a", "rw-b"), step(100))
	create(t, newPlacement("walk", "p", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "walk")}), app)
	agents := newCells(t)
	rev1 := render.AppRevision(app)

	// A first deploy has nothing to compare a canary with: it goes straight to the last step.
	waitStep(t, app, "4/4", hubv1alpha1.PhaseProgressing, 100)
	for _, n := range all {
		expectTraffic(t, n, "web", target{rev1, 100, ""})
	}
	agents.readyAt(app, rev1, all...)
	waitCompleted(t, app, rev1)
	h0 := heads(t)

	// The change: step 1 puts 10 % on the canary in rw-a only.
	rev2 := setImage(t, app, "ghcr.io/acme/web:v2")
	g.Expect(rev2).NotTo(Equal(rev1))
	ro := waitStep(t, app, "1/4", hubv1alpha1.PhaseProgressing, 10)
	g.Expect(ro.Status.CanaryRevision).To(Equal(rev2))
	g.Expect(ro.Status.StableRevision).To(Equal(rev1))
	expectTraffic(t, "rw-a", "web", target{rev1, 90, render.TagStable}, target{rev2, 10, render.TagCanary})
	expectUnchanged(t, h0, "rw-b", "rw-c", "rw-d")
	h1 := heads(t)
	g.Expect(h1["cells/rw-a"]).NotTo(Equal(h0["cells/rw-a"]))
	g.Expect(parent(t, h1["cells/rw-a"])).To(Equal(h0["cells/rw-a"]), "steps are fast-forward commits")

	// rw-a reports the step: the hub creates the RolloutStep for step 2 (A at 50 %).
	agents.readyAt(app, rev2, "rw-a")
	waitStep(t, app, "2/4", hubv1alpha1.PhaseProgressing, 50)
	expectTraffic(t, "rw-a", "web", target{rev1, 50, render.TagStable}, target{rev2, 50, render.TagCanary})
	expectUnchanged(t, h0, "rw-b", "rw-c", "rw-d")
	steps := &hubv1alpha1.RolloutStepList{}
	g.Expect(k8s.List(ctx, steps, client.InNamespace("walk"))).To(Succeed())
	g.Expect(steps.Items).To(HaveLen(1))
	g.Expect(steps.Items[0].Labels[hubv1alpha1.LabelCreatedBy]).To(Equal("hub"))
	g.Expect(steps.Items[0].Spec.Action).To(Equal(hubv1alpha1.ActionAdvance))
	g.Expect(steps.Items[0].Spec.Step).To(Equal(ptr.To[int32](2)))

	// Step 2 bakes for 3 s once healthy; then step 3 adds rw-b at 50 %; rw-a's bytes do not change.
	h2 := heads(t)
	agents.readyAt(app, rev2, "rw-a")
	ro = waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Message).To(ContainSubstring("Step 2/4 is healthy; baking until"))
	})
	g.Consistently(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ro), ro)).To(Succeed())
		g.Expect(ro.Status.StepDisplay).To(Equal("2/4"))
	}, time.Second, 100*time.Millisecond).Should(Succeed())
	ro = waitStep(t, app, "3/4", hubv1alpha1.PhaseProgressing, 50)
	g.Expect(ro.Status.StepCompletedAt).To(BeNil())
	expectTraffic(t, "rw-a", "web", target{rev1, 50, render.TagStable}, target{rev2, 50, render.TagCanary})
	expectTraffic(t, "rw-b", "web", target{rev1, 50, render.TagStable}, target{rev2, 50, render.TagCanary})
	expectUnchanged(t, h2, "rw-a")
	expectUnchanged(t, h0, "rw-c", "rw-d")
	h3 := heads(t)

	// The gate: rw-b still reports the commit before the step, so step 3 does not complete ...
	agents.report(app, cellReport{cell: "rw-a", applied: h3["cells/rw-a"], revision: rev2, ready: true},
		cellReport{cell: "rw-b", applied: h2["cells/rw-b"], revision: rev1, ready: true})
	ro = waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Message).To(ContainSubstring("rw-b: applied " + h2["cells/rw-b"][:12]))
	})
	g.Consistently(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ro), ro)).To(Succeed())
		g.Expect(ro.Status.StepDisplay).To(Equal("3/4"))
		g.Expect(ro.Status.StepCompletedAt).To(BeNil())
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
	// ... nor while it reports the right commit, Ready, with a stale heartbeat (policy Wait): its
	// agent stops heartbeating until the hub judges it stale, then reports the commit without a
	// newer heartbeat.
	old := time.Now().Add(-time.Minute)
	agents.report(app, cellReport{cell: "rw-b", applied: h2["cells/rw-b"], revision: rev1, ready: true, heartbeat: old})
	waitRollout(t, ro, func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Message).To(ContainSubstring("rw-b: No heartbeat since"))
	})
	agents.report(app, cellReport{cell: "rw-b", applied: h3["cells/rw-b"], revision: rev2, ready: true, heartbeat: old})
	g.Consistently(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ro), ro)).To(Succeed())
		g.Expect(ro.Status.StepDisplay).To(Equal("3/4"))
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
	expectUnchanged(t, h3, all...)

	// A fresh report completes it; the last step sends 100 % to the new revision everywhere.
	agents.readyAt(app, rev2, "rw-b")
	waitStep(t, app, "4/4", hubv1alpha1.PhaseProgressing, 100)
	for _, n := range all {
		expectTraffic(t, n, "web", target{rev2, 100, ""})
	}
	agents.readyAt(app, rev2, all...)
	ro = waitCompleted(t, app, rev2)
	g.Expect(ro.Status.CanaryRevision).To(BeEmpty())
	g.Expect(ro.Status.CellsDisplay).To(Equal("4/4/4"))
	g.Expect(ro.Status.History).To(HaveLen(2))
	g.Expect(ro.Status.History[1].Revision).To(Equal(rev2))
	expectEvent(t, ro, corev1.EventTypeNormal, hubv1alpha1.ReasonRolledOut)
	for _, n := range all {
		_, err := verifyCommit(t, "cells/"+n)
		g.Expect(err).NotTo(HaveOccurred(), "every step commit is signed")
	}
}

// With staleCellPolicy Skip a stale masked cell does not hold the step, and the status names it.
func TestCanarySkipsStaleCells(t *testing.T) {
	g := NewWithT(t)
	newNamespace(t, "skip", "")
	for _, n := range []string{"sk-a", "sk-b", "sk-c"} {
		newCell(t, n, "member-"+n, map[string]string{hubv1alpha1.LabelRegion: "skip"})
	}
	app := canaryApp("skip", "web", "p", "ghcr.io/acme/web:v1", step(50, "sk-a", "sk-b"), step(100))
	app.Spec.Strategy.Canary.StaleCellPolicy = "Skip"
	create(t, newPlacement("skip", "p", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "skip")}), app)
	agents := newCells(t)
	rev1 := render.AppRevision(app)
	// Without any report every cell counts as stale, and Skip passes them over: the first
	// deploy completes at once and says so.
	ro := waitCompleted(t, app, rev1)
	g.Expect(ro.Status.SkippedCells).To(Equal([]string{"sk-a", "sk-b", "sk-c"}))
	agents.readyAt(app, rev1, "sk-a", "sk-b", "sk-c")
	waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.CellsDisplay).To(Equal("3/3/3"), "the hub has read the reports")
	})

	rev2 := setImage(t, app, "ghcr.io/acme/web:v2")
	waitStep(t, app, "1/2", hubv1alpha1.PhaseProgressing, 50)
	h := heads(t)
	// sk-b's agent stops heartbeating; once the hub judges it stale, the step skips it.
	agents.report(app, cellReport{cell: "sk-b", applied: h["cells/sk-b"], revision: rev2, ready: true, heartbeat: time.Now().Add(-time.Minute)})
	waitCell(t, &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: "sk-b"}}, func(g Gomega, c *hubv1alpha1.Cell) {
		g.Expect(apimeta.IsStatusConditionTrue(c.Status.Conditions, hubv1alpha1.StaleCondition)).To(BeTrue())
	})
	agents.readyAt(app, rev2, "sk-a")
	waitStep(t, app, "2/2", hubv1alpha1.PhaseProgressing, 100)
	agents.readyAt(app, rev2, "sk-a", "sk-c")
	ro = waitCompleted(t, app, rev2)
	g.Expect(ro.Status.SkippedCells).To(Equal([]string{"sk-b"}))
	ready := apimeta.FindStatusCondition(ro.Status.Conditions, meta.ReadyCondition)
	g.Expect(ready.Message).To(ContainSubstring("skipped stale cells: sk-b"))
	for _, c := range ro.Status.Cells {
		g.Expect(c.Skipped).To(Equal(c.Cell == "sk-b"), "cell %s", c.Cell)
	}
}

// A canary that stays not Ready past the failure threshold aborts the rollout: its branch gets
// the last-known-good tree back as a new commit on top (a fast-forward, no force push).
func TestCanaryAbortsOnFailure(t *testing.T) {
	g := NewWithT(t)
	newNamespace(t, "fail", "")
	for _, n := range []string{"fa-a", "fa-b"} {
		newCell(t, n, "member-"+n, map[string]string{hubv1alpha1.LabelRegion: "fail"})
	}
	app := canaryApp("fail", "web", "p", "ghcr.io/acme/web:v1", step(50, "fa-a"), step(100))
	app.Spec.Strategy.Canary.FailureThreshold = &metav1.Duration{Duration: time.Second}
	create(t, newPlacement("fail", "p", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "fail")}), app)
	agents := newCells(t)
	rev1 := render.AppRevision(app)
	waitStep(t, app, "2/2", hubv1alpha1.PhaseProgressing, 100)
	agents.readyAt(app, rev1, "fa-a", "fa-b")
	waitCompleted(t, app, rev1)
	lkg := heads(t)
	lkgTree := tree(t, lkg["cells/fa-a"])

	rev2 := setImage(t, app, "ghcr.io/acme/web:broken")
	ro := waitStep(t, app, "1/2", hubv1alpha1.PhaseProgressing, 50)
	g.Expect(ro.Status.Cells[0].LastKnownGood).To(Equal(lkg["cells/fa-a"]))
	stepHead := heads(t)["cells/fa-a"]
	g.Expect(tree(t, stepHead)).NotTo(Equal(lkgTree))
	agents.report(app, cellReport{cell: "fa-a", applied: stepHead, revision: rev1, ready: false, message: "Revision " + rev2 + " failed: container exited"})

	ro = waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhaseAborted))
		g.Expect(r.Status.Message).To(ContainSubstring("Canary failed: fa-a: Revision " + rev2 + " failed"))
		ready := apimeta.FindStatusCondition(r.Status.Conditions, meta.ReadyCondition)
		g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(ready.Reason).To(Equal(hubv1alpha1.ReasonAborted))
	})
	expectEvent(t, ro, corev1.EventTypeWarning, hubv1alpha1.ReasonAborted)
	after := cellHeads(t)
	g.Expect(tree(t, after["cells/fa-a"])).To(Equal(lkgTree), "fa-a is back at its last-known-good tree")
	g.Expect(parent(t, after["cells/fa-a"])).To(Equal(stepHead), "the abort is a new commit on top of the step")
	g.Expect(after["cells/fa-b"]).To(Equal(lkg["cells/fa-b"]), "fa-b was never touched")
	expectTraffic(t, "fa-a", "web", target{rev1, 100, ""})

	// An aborted rollout stays aborted: no retry of the same revision behind anyone's back.
	g.Consistently(func(g Gomega) {
		g.Expect(cellHeads(t)).To(Equal(after))
	}, 2*time.Second, 250*time.Millisecond).Should(Succeed())
}

func newStep(ns, name, rollout string, action hubv1alpha1.RolloutAction, mut ...func(*hubv1alpha1.RolloutStep)) *hubv1alpha1.RolloutStep {
	s := &hubv1alpha1.RolloutStep{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       hubv1alpha1.RolloutStepSpec{RolloutRef: corev1.LocalObjectReference{Name: rollout}, Action: action},
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

func waitStepPhase(t *testing.T, s *hubv1alpha1.RolloutStep, phase hubv1alpha1.RolloutStepPhase, reason, message string) *hubv1alpha1.RolloutStep {
	t.Helper()
	g := NewWithT(t)
	got := &hubv1alpha1.RolloutStep{}
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(s), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(phase), "message: %s", got.Status.Message)
		g.Expect(got.Status.Message).To(ContainSubstring(message))
		if reason != "" {
			ready := apimeta.FindStatusCondition(got.Status.Conditions, meta.ReadyCondition)
			g.Expect(ready).NotTo(BeNil())
			g.Expect(ready.Reason).To(Equal(reason))
		}
		if phase == hubv1alpha1.StepRefused {
			g.Expect(apimeta.IsStatusConditionTrue(got.Status.Conditions, meta.StalledCondition)).To(BeTrue())
		}
	}, timeout, poll).Should(Succeed())
	if phase == hubv1alpha1.StepRefused {
		expectEvent(t, got, corev1.EventTypeWarning, reason)
	}
	return got
}

// A step paused until approval shows in kubectl get rollouts; bad RolloutSteps are refused with
// nothing written; the plugin's promote advances it, its abort reverts every touched branch in
// one push, and undo rolls forward to an earlier revision.
func TestPausedRolloutWithKubectl(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "plug", "")
	all := []string{"pk-a", "pk-b", "pk-c"}
	for _, n := range all {
		newCell(t, n, "member-"+n, map[string]string{hubv1alpha1.LabelRegion: "plug"})
	}
	first := step(20, "pk-a")
	first.Pause = &hubv1alpha1.StepPause{UntilApproved: true}
	app := canaryApp("plug", "shop", "p", "ghcr.io/acme/shop:v1", first, step(100))
	create(t, newPlacement("plug", "p", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "plug")}), app)
	agents := newCells(t)
	rev1 := render.AppRevision(app)
	waitStep(t, app, "2/2", hubv1alpha1.PhaseProgressing, 100)
	agents.readyAt(app, rev1, all...)
	waitCompleted(t, app, rev1)

	rev2 := setImage(t, app, "ghcr.io/acme/shop:v2")
	waitStep(t, app, "1/2", hubv1alpha1.PhaseProgressing, 20)
	agents.readyAt(app, rev2, "pk-a")
	ro := waitStep(t, app, "1/2", hubv1alpha1.PhasePaused, 20)
	g.Expect(ro.Status.Message).To(ContainSubstring("waiting for approval: kubectl cells promote shop -n plug"))
	g.Expect(getRollouts(t, "plug")).To(MatchRegexp(`(?m)^shop\s+shop\s+1/2\s+Paused\s+20\s+1/3/3\s+` + rev1 + `\s+` + rev2 + `\s+\S+\s*$`))

	// Bad RolloutSteps: each refused with a reason, nothing written to Git.
	before := cellHeads(t)
	bad := []struct {
		step    *hubv1alpha1.RolloutStep
		reason  string
		message string
	}{
		{newStep("plug", "too-heavy", "shop", hubv1alpha1.ActionAdvance, func(s *hubv1alpha1.RolloutStep) { s.Spec.Weight = ptr.To[int32](101) }),
			hubv1alpha1.ReasonInvalidStep, "traffic weight 101 is not between 0 and 100"},
		{newStep("plug", "elsewhere", "shop", hubv1alpha1.ActionAdvance, func(s *hubv1alpha1.RolloutStep) {
			s.Spec.Cells = &hubv1alpha1.StepCells{Names: []string{"pk-a", "rw-a"}}
		}), hubv1alpha1.ReasonInvalidStep, "outside the placement: rw-a"},
		{newStep("plug", "ghost", "no-such-app", hubv1alpha1.ActionAdvance), hubv1alpha1.ReasonRolloutNotFound, `Rollout "no-such-app" does not exist in namespace "plug"`},
	}
	for _, b := range bad {
		create(t, b.step)
		waitStepPhase(t, b.step, hubv1alpha1.StepRefused, b.reason, b.message)
	}
	g.Expect(cellHeads(t)).To(Equal(before), "refused steps write nothing")
	waitStep(t, app, "1/2", hubv1alpha1.PhasePaused, 20)

	// The plugin's promote approves the pause: the last step renders 100 % everywhere.
	out := kubectlCells(t, "promote", "shop", "-n", "plug")
	g.Expect(out).To(ContainSubstring("created (Advance plug/shop)"))
	waitStep(t, app, "2/2", hubv1alpha1.PhaseProgressing, 100)
	made := &hubv1alpha1.RolloutStepList{}
	g.Expect(k8s.List(ctx, made, client.InNamespace("plug"), client.MatchingLabels{hubv1alpha1.LabelCreatedBy: "kubectl-cells"})).To(Succeed())
	g.Expect(made.Items).To(HaveLen(1))
	g.Expect(made.Items[0].OwnerReferences).To(HaveLen(1), "owned by the Rollout, so it goes with the app")
	g.Expect(made.Items[0].OwnerReferences[0].Kind).To(Equal("Rollout"))
	g.Expect(made.Items[0].Spec.Reason).To(HavePrefix("kubectl cells promote"))
	for _, n := range all {
		expectTraffic(t, n, "shop", target{rev2, 100, ""})
	}
	agents.readyAt(app, rev2, all...)
	waitCompleted(t, app, rev2)

	// Two advances at once: the first moves the rollout, the second is refused as a conflict.
	lkg := heads(t)
	rev3 := setImage(t, app, "ghcr.io/acme/shop:v3")
	waitStep(t, app, "1/2", hubv1alpha1.PhaseProgressing, 20)
	agents.readyAt(app, rev3, "pk-a")
	waitStep(t, app, "1/2", hubv1alpha1.PhasePaused, 20)
	one, two := newStep("plug", "approve-1", "shop", hubv1alpha1.ActionAdvance), newStep("plug", "approve-2", "shop", hubv1alpha1.ActionAdvance)
	create(t, one, two)
	waitStepPhase(t, one, hubv1alpha1.StepApplied, hubv1alpha1.ReasonStepApplied, "Step 2/2")
	waitStepPhase(t, two, hubv1alpha1.StepRefused, hubv1alpha1.ReasonStepConflict, "step 2/2 (approve-1) is still in progress")
	waitStep(t, app, "2/2", hubv1alpha1.PhaseProgressing, 100)
	stepHeads := heads(t)
	g.Expect(parent(t, parent(t, stepHeads["cells/pk-a"]))).To(Equal(lkg["cells/pk-a"]), "pk-a: step 1, then the one step that acted")
	for _, n := range []string{"pk-b", "pk-c"} {
		g.Expect(parent(t, stepHeads["cells/"+n])).To(Equal(lkg["cells/"+n]), "%s: one commit for the one step that acted", n)
	}

	// The plugin's abort puts every touched branch back at its last-known-good tree.
	g.Expect(kubectlCells(t, "abort", "shop", "-n", "plug")).To(ContainSubstring("created (Abort plug/shop)"))
	waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhaseAborted))
		g.Expect(r.Status.Message).To(ContainSubstring("Aborted by RolloutStep shop-abort-"))
	})
	after := heads(t)
	for _, n := range all {
		g.Expect(tree(t, after["cells/"+n])).To(Equal(tree(t, lkg["cells/"+n])), "cell %s is back at its last-known-good tree", n)
		g.Expect(parent(t, after["cells/"+n])).To(Equal(stepHeads["cells/"+n]), "cell %s: the abort fast-forwards", n)
	}
	g.Expect(getRollouts(t, "plug")).To(MatchRegexp(`(?m)^shop\s+shop\s+2/2\s+Aborted\s+0\s+`))

	// Undo rolls forward to the stable revision: the app's template is set back to v2.
	g.Expect(kubectlCells(t, "undo", "shop", "-n", "plug")).To(ContainSubstring("created (Undo plug/shop)"))
	g.Eventually(func(g Gomega) {
		got := &hubv1alpha1.ServerlessApp{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(app), got)).To(Succeed())
		g.Expect(got.Spec.Template.Image).To(Equal("ghcr.io/acme/shop:v2"))
		g.Expect(render.AppRevision(got)).To(Equal(rev2))
	}, timeout, poll).Should(Succeed())
	ro = waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.CanaryRevision).To(Equal(rev2))
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhaseProgressing))
	})
	g.Expect(ro.Status.StepDisplay).To(Equal("1/2"))
}

// A change during a rollout supersedes it: the new revision starts at step 1 from the cells'
// stable revisions, cells the old canary reached outside the new first step go back to their
// last-known-good trees, and the step that was in progress is marked Superseded. The plugin's
// pause holds automatic advances until resume.
func TestCanarySupersededAndPaused(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "super", "")
	all := []string{"su-a", "su-b", "su-c"}
	for _, n := range all {
		newCell(t, n, "member-"+n, map[string]string{hubv1alpha1.LabelRegion: "super"})
	}
	app := canaryApp("super", "api", "p", "ghcr.io/acme/api:v1", step(50, "su-a"), step(50, "su-a", "su-b"), step(100))
	create(t, newPlacement("super", "p", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "super")}), app)
	agents := newCells(t)
	rev1 := render.AppRevision(app)
	waitStep(t, app, "3/3", hubv1alpha1.PhaseProgressing, 100)
	agents.readyAt(app, rev1, all...)
	waitCompleted(t, app, rev1)
	lkg := heads(t)

	rev2 := setImage(t, app, "ghcr.io/acme/api:v2")
	waitStep(t, app, "1/3", hubv1alpha1.PhaseProgressing, 50)
	agents.readyAt(app, rev2, "su-a")
	ro := waitStep(t, app, "2/3", hubv1alpha1.PhaseProgressing, 50)
	inProgress := &hubv1alpha1.RolloutStep{ObjectMeta: metav1.ObjectMeta{Namespace: "super", Name: ro.Status.CurrentStep}}
	expectTraffic(t, "su-b", "api", target{rev1, 50, render.TagStable}, target{rev2, 50, render.TagCanary})

	rev3 := setImage(t, app, "ghcr.io/acme/api:v3")
	ro = waitStep(t, app, "1/3", hubv1alpha1.PhaseProgressing, 50)
	g.Expect(ro.Status.CanaryRevision).To(Equal(rev3))
	g.Expect(ro.Status.SupersededRevision).To(Equal(rev2))
	expectTraffic(t, "su-a", "api", target{rev1, 50, render.TagStable}, target{rev3, 50, render.TagCanary})
	h := heads(t)
	g.Expect(tree(t, h["cells/su-b"])).To(Equal(tree(t, lkg["cells/su-b"])), "su-b ran the superseded canary and goes back to its last-known-good tree")
	g.Expect(h["cells/su-c"]).To(Equal(lkg["cells/su-c"]))
	waitStepPhase(t, inProgress, hubv1alpha1.StepSuperseded, hubv1alpha1.ReasonSuperseded, "Superseded by revision "+rev3)
	expectEvent(t, ro, corev1.EventTypeNormal, hubv1alpha1.ReasonSuperseded)

	// Paused: the healthy step does not advance until resumed.
	g.Expect(kubectlCells(t, "pause", "api", "-n", "super")).To(ContainSubstring("created (Pause super/api)"))
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ro), ro)).To(Succeed())
		g.Expect(ro.Status.Paused).To(BeTrue())
	}, timeout, poll).Should(Succeed())
	agents.readyAt(app, rev3, "su-a")
	waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhasePaused))
		g.Expect(r.Status.StepCompletedAt).NotTo(BeNil())
		g.Expect(r.Status.Message).To(ContainSubstring("paused by a RolloutStep"))
	})
	g.Consistently(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ro), ro)).To(Succeed())
		g.Expect(ro.Status.StepDisplay).To(Equal("1/3"))
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(kubectlCells(t, "resume", "api", "-n", "super")).To(ContainSubstring("created (Resume super/api)"))
	ro = waitStep(t, app, "2/3", hubv1alpha1.PhaseProgressing, 50)
	expectTraffic(t, "su-b", "api", target{rev1, 50, render.TagStable}, target{rev3, 50, render.TagCanary})

	// promote --full skips the gate of the step in progress and every step after it.
	step2 := &hubv1alpha1.RolloutStep{ObjectMeta: metav1.ObjectMeta{Namespace: "super", Name: ro.Status.CurrentStep}}
	g.Expect(kubectlCells(t, "promote", "api", "-n", "super", "--full")).To(ContainSubstring("created (Promote super/api)"))
	waitStep(t, app, "3/3", hubv1alpha1.PhaseProgressing, 100)
	waitStepPhase(t, step2, hubv1alpha1.StepSuperseded, hubv1alpha1.ReasonSuperseded, "Replaced by step 3/3")
	for _, n := range all {
		expectTraffic(t, n, "api", target{rev3, 100, ""})
	}
	agents.readyAt(app, rev3, all...)
	waitCompleted(t, app, rev3)
}

// A cell taken out of the placement during a rollout loses the app, and a later abort does not
// put it back there; the cells still placed go back to their last-known-good trees.
func TestCanaryForgetsUnplacedCells(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "shrink", "")
	for _, n := range []string{"pl-a", "pl-b"} {
		newCell(t, n, "member-"+n, nil)
	}
	first := hubv1alpha1.CanaryStep{Cells: hubv1alpha1.StepCells{Count: ptr.To[int32](2)}, Weight: 50, Pause: &hubv1alpha1.StepPause{UntilApproved: true}}
	app := canaryApp("shrink", "web", "p", "ghcr.io/acme/web:v1", first, step(100))
	pl := newPlacement("shrink", "p", hubv1alpha1.CellPlacementSpec{Cells: []string{"pl-a", "pl-b"}})
	create(t, pl, app)
	agents := newCells(t)
	rev1 := render.AppRevision(app)
	waitStep(t, app, "2/2", hubv1alpha1.PhaseProgressing, 100)
	agents.readyAt(app, rev1, "pl-a", "pl-b")
	waitCompleted(t, app, rev1)
	lkg := heads(t)

	rev2 := setImage(t, app, "ghcr.io/acme/web:v2")
	waitStep(t, app, "1/2", hubv1alpha1.PhaseProgressing, 50)
	agents.readyAt(app, rev2, "pl-a", "pl-b")
	waitStep(t, app, "1/2", hubv1alpha1.PhasePaused, 50)

	g.Eventually(func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pl), pl); err != nil {
			return err
		}
		pl.Spec.Cells = []string{"pl-a"}
		return k8s.Update(ctx, pl)
	}, timeout, poll).Should(Succeed())
	g.Eventually(func() bool { return fileExists(t, "cells/pl-b", ".cellsync/apps/shrink.web.yaml") }, timeout, poll).Should(BeFalse())
	waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.TotalCells).To(Equal(int32(1)))
		g.Expect(r.Status.Cells).To(HaveLen(1), "the rollout no longer holds pl-b")
	})
	removed := heads(t)["cells/pl-b"]

	abort := newStep("shrink", "abort", "web", hubv1alpha1.ActionAbort)
	create(t, abort)
	waitStepPhase(t, abort, hubv1alpha1.StepSucceeded, hubv1alpha1.ReasonAborted, "last-known-good")
	after := heads(t)
	g.Expect(tree(t, after["cells/pl-a"])).To(Equal(tree(t, lkg["cells/pl-a"])))
	g.Expect(after["cells/pl-b"]).To(Equal(removed), "the abort leaves the unplaced cell alone")
	g.Expect(fileExists(t, "cells/pl-b", ".cellsync/apps/shrink.web.yaml")).To(BeFalse())
}

// A rollout keeps its last 20 finished RolloutSteps; a RolloutStep cannot be edited.
func TestRolloutStepsAreBoundedAndImmutable(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "bounded", "")
	newCell(t, "bd-a", "member-bd", nil)
	app := canaryApp("bounded", "web", "p", "ghcr.io/acme/web:v1", step(100))
	create(t, newPlacement("bounded", "p", hubv1alpha1.CellPlacementSpec{Cells: []string{"bd-a"}}), app)
	agents := newCells(t)
	waitStep(t, app, "1/1", hubv1alpha1.PhaseProgressing, 100)
	agents.readyAt(app, render.AppRevision(app), "bd-a")
	waitCompleted(t, app, render.AppRevision(app))

	for i := 0; i < 25; i++ {
		create(t, newStep("bounded", fmt.Sprintf("resume-%02d", i), "web", hubv1alpha1.ActionResume))
	}
	g.Eventually(func(g Gomega) {
		list := &hubv1alpha1.RolloutStepList{}
		g.Expect(k8s.List(ctx, list, client.InNamespace("bounded"))).To(Succeed())
		g.Expect(list.Items).To(HaveLen(20))
		for _, s := range list.Items {
			g.Expect(s.Status.Phase).To(Equal(hubv1alpha1.StepSucceeded))
			g.Expect(s.Name).NotTo(BeElementOf("resume-00", "resume-01", "resume-02", "resume-03", "resume-04"), "the oldest go first")
		}
	}, timeout, poll).Should(Succeed())

	s := &hubv1alpha1.RolloutStep{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: "bounded", Name: "resume-24"}, s)).To(Succeed())
	s.Spec.Action = hubv1alpha1.ActionAbort
	err := k8s.Update(ctx, s)
	g.Expect(err).To(MatchError(ContainSubstring("a RolloutStep cannot be changed; create a new one")))
}
