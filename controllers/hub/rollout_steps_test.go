package hub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/render"
)

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
