package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/render"
)

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
