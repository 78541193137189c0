package hub_test

import (
	"context"
	"testing"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

const warmPatch = `apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "1"
`

func minScale(svc *unstructured.Unstructured) (string, bool) {
	v, ok, _ := unstructured.NestedString(svc.Object, "spec", "template", "metadata", "annotations", "autoscaling.knative.dev/min-scale")
	return v, ok
}

// The whole life of an app: rendered into the branches of the cells it is placed on, with
// per-cell overrides, domains and schedules; signed; unchanged when nothing changed; updated
// only where placed; removed from a cell that leaves the placement.
func TestAppIsRenderedIntoItsCellBranches(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "render", "")
	newCell(t, "r-prod", "member-a", map[string]string{hubv1alpha1.LabelRegion: "eu", hubv1alpha1.LabelEnv: "prod"})
	newCell(t, "r-test", "member-b", map[string]string{hubv1alpha1.LabelRegion: "eu", hubv1alpha1.LabelEnv: "test"})
	newCell(t, "r-us", "member-c", map[string]string{hubv1alpha1.LabelRegion: "us"})

	// Another app keeps r-us busy, so that we can see its branch is never touched.
	us := newPlacement("render", "us", hubv1alpha1.CellPlacementSpec{Cells: []string{"r-us"}})
	other := newApp("render", "other", "us", "ghcr.io/acme/other:v1")
	create(t, us, other)
	waitReady(t, other)

	eu := newPlacement("render", "eu", hubv1alpha1.CellPlacementSpec{
		CellSelector: selectLabels(hubv1alpha1.LabelRegion, "eu"),
		Overrides: []hubv1alpha1.CellOverride{{
			Name: "prod-warm", CellSelector: selectLabels(hubv1alpha1.LabelEnv, "prod"),
			Patches: []hubv1alpha1.Patch{{Patch: warmPatch}},
		}},
	})
	app := newApp("render", "hello", "eu", "ghcr.io/acme/hello:v1", func(a *hubv1alpha1.ServerlessApp) {
		a.Spec.Domains = []string{"{app}.sls-{cluster}.example.com"}
		a.Spec.Schedules = []hubv1alpha1.Schedule{{Name: "warmup", Schedule: "*/10 * * * *", Data: `{"ping":true}`}}
		a.Spec.Template.Scaling = &hubv1alpha1.Scaling{MaxScale: ptr.To[int32](5)}
	})
	create(t, eu, app)
	got := waitReady(t, app)
	g.Expect(got.Status.CellCount).To(Equal(2))
	g.Expect(got.Status.Cells).To(Equal([]string{"r-prod", "r-test"}))
	g.Expect(got.Status.Revision).To(HavePrefix("hello-"))
	g.Expect(got.Finalizers).To(ContainElement(hubv1alpha1.Finalizer))
	expectEvent(t, app, corev1.EventTypeNormal, hubv1alpha1.ReasonRendered)

	pl := &hubv1alpha1.CellPlacement{}
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(eu), pl)).To(Succeed())
		g.Expect(pl.Status.ResolvedCells).To(Equal([]string{"r-prod", "r-test"}))
		g.Expect(apimeta.IsStatusConditionTrue(pl.Status.Conditions, meta.ReadyCondition)).To(BeTrue())
	}, timeout, poll).Should(Succeed())

	// kustomize build on each branch root gives the Knative objects, with the override on prod only.
	g.Eventually(func(g Gomega) {
		g.Expect(heads(t)).To(HaveKey("cells/r-prod"))
		g.Expect(heads(t)).To(HaveKey("cells/r-test"))
	}, timeout, poll).Should(Succeed())
	prod := build(t, "cells/r-prod")
	g.Expect(prod).To(HaveKey("Service/hello"))
	g.Expect(prod).NotTo(HaveKey("Service/other"))
	svc := prod["Service/hello"]
	g.Expect(svc.GetAPIVersion()).To(Equal("serving.knative.dev/v1"))
	g.Expect(svc.GetNamespace()).To(Equal("apps"))
	v, ok := minScale(svc)
	g.Expect(ok).To(BeTrue())
	g.Expect(v).To(Equal("1"))
	traffic, _, _ := unstructured.NestedSlice(svc.Object, "spec", "traffic")
	g.Expect(traffic).To(HaveLen(1))
	g.Expect(traffic[0]).To(HaveKeyWithValue("percent", BeNumerically("==", 100)))
	g.Expect(prod).To(HaveKey("DomainMapping/hello.sls-member-a.example.com"))
	g.Expect(prod).To(HaveKey("PingSource/hello-warmup"))
	sink, _, _ := unstructured.NestedString(prod["PingSource/hello-warmup"].Object, "spec", "sink", "ref", "name")
	g.Expect(sink).To(Equal("hello"))

	test := build(t, "cells/r-test")
	_, ok = minScale(test["Service/hello"])
	g.Expect(ok).To(BeFalse(), "the prod override must not reach the test cell")
	g.Expect(test).To(HaveKey("DomainMapping/hello.sls-member-b.example.com"))
	g.Expect(fileExists(t, "cells/r-prod", ".cellsync/apps/render.hello.yaml")).To(BeTrue())
	g.Expect(fileExists(t, "cells/r-prod", ".cellsync/cell.yaml")).To(BeTrue())

	// Commits are signed with the configured key.
	out, err := verifyCommit(t, "cells/r-prod")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("Good signature"))

	// Nothing changed: a reconcile makes no commit.
	before := heads(t)
	requestReconcile(t, app)
	g.Expect(heads(t)).To(Equal(before))

	// A change updates only the branches of the cells the app is placed on.
	cur := &hubv1alpha1.ServerlessApp{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(app), cur)).To(Succeed())
	cur.Spec.Template.Image = "ghcr.io/acme/hello:v2"
	g.Expect(k8s.Update(ctx, cur)).To(Succeed())
	updated := waitReady(t, app)
	g.Expect(updated.Status.Revision).NotTo(Equal(got.Status.Revision))
	// The app's status follows the change at once; its Rollout writes the branches.
	var after map[string]string
	g.Eventually(func(g Gomega) {
		after = heads(t)
		g.Expect(after["cells/r-prod"]).NotTo(Equal(before["cells/r-prod"]))
		g.Expect(after["cells/r-test"]).NotTo(Equal(before["cells/r-test"]))
	}, timeout, poll).Should(Succeed())
	g.Expect(after["cells/r-us"]).To(Equal(before["cells/r-us"]))
	image, _, _ := unstructured.NestedSlice(build(t, "cells/r-test")["Service/hello"].Object, "spec", "template", "spec", "containers")
	g.Expect(image[0]).To(HaveKeyWithValue("image", "ghcr.io/acme/hello:v2"))

	// r-test leaves the placement: its branch loses the app, the others stay as they are.
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(eu), pl)).To(Succeed())
	pl.Spec.CellSelector = nil
	pl.Spec.Cells = []string{"r-prod"}
	g.Expect(k8s.Update(ctx, pl)).To(Succeed())
	waitFor(t, app, func(g Gomega, a *hubv1alpha1.ServerlessApp) { g.Expect(a.Status.Cells).To(Equal([]string{"r-prod"})) })
	var final map[string]string
	g.Eventually(func(g Gomega) {
		final = heads(t)
		g.Expect(final["cells/r-test"]).NotTo(Equal(after["cells/r-test"]))
	}, timeout, poll).Should(Succeed())
	g.Expect(final["cells/r-prod"]).To(Equal(after["cells/r-prod"]))
	g.Expect(final["cells/r-us"]).To(Equal(after["cells/r-us"]))
	g.Expect(build(t, "cells/r-test")).To(BeEmpty())
	g.Expect(fileExists(t, "cells/r-test", "apps/hello/service.yaml")).To(BeFalse())
	g.Expect(fileExists(t, "cells/r-test", ".cellsync/apps/render.hello.yaml")).To(BeFalse())

	// Deleting the app removes it from its cells and lets it go. A cell table its Rollout kept in
	// Git (mid-canary over more than 1,000 cells) is emptied in the same push; another app's
	// table is left alone.
	plantCommit(t, "rollouts/render/hello", map[string]string{"cells/00.jsonl": `{"cell":"r-prod","canary":true}` + "\n"})
	otherTable := plantCommit(t, "rollouts/render/other", map[string]string{"cells/00.jsonl": `{"cell":"r-us","canary":true}` + "\n"})
	g.Expect(k8s.Delete(ctx, app)).To(Succeed())
	g.Eventually(func() bool {
		return fileExists(t, "cells/r-prod", "apps/hello/service.yaml")
	}, timeout, poll).Should(BeFalse())
	g.Expect(build(t, "cells/r-us")).To(HaveKey("Service/other"))
	const emptyTree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
	g.Expect(tree(t, "rollouts/render/hello")).To(Equal(emptyTree), "the deleted app's cell table is emptied")
	g.Expect(gitServer.RevParse(repoName, "rollouts/render/other")).To(Equal(otherTable))
}

// Bad input: a clear Stalled condition and event, and no commit anywhere.
func TestBadInputStallsAndWritesNothing(t *testing.T) {
	newNamespace(t, "bad", "")
	newNamespace(t, "tenant-blue", "blue")
	newCell(t, "b-1", "member-a", map[string]string{hubv1alpha1.LabelRegion: "bad"})
	newCell(t, "b-red", "member-r", map[string]string{hubv1alpha1.LabelRegion: "red", hubv1alpha1.LabelTenant: "red"})
	create(t, newPlacement("bad", "p", hubv1alpha1.CellPlacementSpec{Cells: []string{"b-1"}}))
	create(t, newPlacement("bad", "broken-override", hubv1alpha1.CellPlacementSpec{
		Cells: []string{"b-1"},
		Overrides: []hubv1alpha1.CellOverride{{Name: "nope", Patches: []hubv1alpha1.Patch{{
			Target: &hubv1alpha1.PatchTarget{Kind: "Service"},
			Patch:  `[{"op": "replace", "path": "/spec/template/spec/nothing/here", "value": 1}]`,
		}}}},
	}))
	foreign := newPlacement("tenant-blue", "foreign", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "red")})
	create(t, foreign)

	tests := []struct {
		name    string
		app     *hubv1alpha1.ServerlessApp
		reason  string
		message string
	}{
		{"invalid image", newApp("bad", "img", "p", "ghcr.io/acme/UPPER CASE::v1"), hubv1alpha1.ReasonInvalidImage, "image"},
		{"negative concurrency", newApp("bad", "conc", "p", "ghcr.io/acme/x:v1", func(a *hubv1alpha1.ServerlessApp) {
			a.Spec.Template.ContainerConcurrency = ptr.To[int64](-3)
		}), hubv1alpha1.ReasonInvalidSpec, "containerConcurrency"},
		{"placement of another tenant's cells", newApp("tenant-blue", "tenant", "foreign", "ghcr.io/acme/x:v1"), hubv1alpha1.ReasonTenantViolation, `resolves cells of another tenant: b-red (tenant "red")`},
		{"override that does not apply", newApp("bad", "ovr", "broken-override", "ghcr.io/acme/x:v1"), hubv1alpha1.ReasonOverrideFailed, `override "nope" does not apply to cell "b-1"`},
		{"canary step naming a cell outside the placement", newApp("bad", "canary", "p", "ghcr.io/acme/x:v1", func(a *hubv1alpha1.ServerlessApp) {
			a.Spec.Strategy = &hubv1alpha1.Strategy{Type: hubv1alpha1.StrategyCanary, Canary: &hubv1alpha1.CanaryStrategy{
				Steps: []hubv1alpha1.CanaryStep{
					{Cells: hubv1alpha1.StepCells{Names: []string{"b-elsewhere"}}, Weight: 10},
					{Cells: hubv1alpha1.StepCells{Percent: ptr.To[int32](100)}, Weight: 100},
				},
			}}
		}), hubv1alpha1.ReasonInvalidStrategy, "step 1: the step names cells outside the placement: b-elsewhere"},
		{"canary weight over 100", newApp("bad", "canary-weight", "p", "ghcr.io/acme/x:v1", func(a *hubv1alpha1.ServerlessApp) {
			a.Spec.Strategy = &hubv1alpha1.Strategy{Type: hubv1alpha1.StrategyCanary, Canary: &hubv1alpha1.CanaryStrategy{
				Steps: []hubv1alpha1.CanaryStep{
					{Cells: hubv1alpha1.StepCells{Names: []string{"b-1"}}, Weight: 150},
					{Cells: hubv1alpha1.StepCells{Percent: ptr.To[int32](100)}, Weight: 100},
				},
			}}
		}), hubv1alpha1.ReasonInvalidStrategy, "step 1: traffic weight 150 is not between 0 and 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			before := heads(t)
			create(t, tt.app)
			got := waitStalled(t, tt.app, tt.reason)
			ready := apimeta.FindStatusCondition(got.Status.Conditions, meta.ReadyCondition)
			g.Expect(ready.Message).To(ContainSubstring(tt.message))
			expectEvent(t, tt.app, corev1.EventTypeWarning, tt.reason)
			g.Expect(heads(t)).To(Equal(before), "nothing may reach Git")
		})
	}

	// The placement itself says what is wrong with it.
	g := NewWithT(t)
	pl := &hubv1alpha1.CellPlacement{}
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(foreign), pl)).To(Succeed())
		g.Expect(apimeta.IsStatusConditionTrue(pl.Status.Conditions, meta.StalledCondition)).To(BeTrue())
		g.Expect(apimeta.FindStatusCondition(pl.Status.Conditions, meta.ReadyCondition).Reason).To(Equal(hubv1alpha1.ReasonTenantViolation))
	}, timeout, poll).Should(Succeed())
	expectEvent(t, foreign, corev1.EventTypeWarning, hubv1alpha1.ReasonTenantViolation)
}

// Git failures: refused credentials stall with a message about the Secret; an unreachable server
// is retried (never Stalled) and the app converges once it is back.
func TestGitFailures(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "gitfail", "")
	newCell(t, "g-1", "member-a", nil)
	create(t, newPlacement("gitfail", "p", hubv1alpha1.CellPlacementSpec{Cells: []string{"g-1"}}))

	t.Run("wrong password", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(k8s.Update(ctx, gitSecret("wrong-password"))).To(Succeed())
		before := heads(t)
		app := newApp("gitfail", "auth", "p", "ghcr.io/acme/x:v1")
		create(t, app)
		got := waitStalled(t, app, hubv1alpha1.ReasonGitAuthFailed)
		msg := apimeta.FindStatusCondition(got.Status.Conditions, meta.ReadyCondition).Message
		g.Expect(msg).To(ContainSubstring("credentials"))
		g.Expect(msg).NotTo(ContainSubstring("wrong-password"))
		expectEvent(t, app, corev1.EventTypeWarning, hubv1alpha1.ReasonGitAuthFailed)
		g.Expect(heads(t)).To(Equal(before))

		// Fixing the Secret and asking for a reconcile recovers.
		g.Expect(k8s.Update(ctx, gitSecret(gitPassword))).To(Succeed())
		requestReconcile(t, app)
		waitReady(t, app)
	})

	t.Run("unreachable server", func(t *testing.T) {
		gitServer.Stop()
		app := newApp("gitfail", "down", "p", "ghcr.io/acme/y:v1")
		create(t, app)
		got := waitFor(t, app, func(g Gomega, a *hubv1alpha1.ServerlessApp) {
			ready := apimeta.FindStatusCondition(a.Status.Conditions, meta.ReadyCondition)
			g.Expect(ready).NotTo(BeNil())
			g.Expect(ready.Reason).To(Equal(hubv1alpha1.ReasonGitUnavailable))
		})
		g.Expect(apimeta.IsStatusConditionTrue(got.Status.Conditions, meta.ReconcilingCondition)).To(BeTrue())
		g.Expect(apimeta.FindStatusCondition(got.Status.Conditions, meta.StalledCondition)).To(BeNil(), "an outage is retried, not Stalled")
		expectEvent(t, app, corev1.EventTypeWarning, hubv1alpha1.ReasonGitUnavailable)
		g.Expect(gitServer.Start()).To(Succeed())
		waitReady(t, app)
		g.Eventually(func(g Gomega) {
			g.Expect(heads(t)).To(HaveKey("cells/g-1"))
		}, timeout, poll).Should(Succeed())
		g.Expect(build(t, "cells/g-1")).To(HaveKey("Service/down"))
	})

}
