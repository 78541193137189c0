package hub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	hubcontrollers "github.com/cellsync/cellsync/controllers/hub"
	"github.com/cellsync/cellsync/test/testenv"
)

// Adding a Cell re-renders only the apps it is placed in: a Cell no placement of an app
// selects costs that app no render (counted by cellsync_hub_app_renders_total), and a Cell
// its placement selects renders it once, into the new cell's branch.
func TestAddingACellRendersOnlyTheAppsPlacedOnIt(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "scoped", "")
	newCell(t, "sc-a", "member-sc-a", map[string]string{hubv1alpha1.LabelRegion: "scoped-1"})
	newCell(t, "sc-o", "member-sc-o", map[string]string{hubv1alpha1.LabelRegion: "scoped-2"})
	placed := newApp("scoped", "placed", "one", "ghcr.io/acme/web:v1")
	other := newApp("scoped", "other", "two", "ghcr.io/acme/web:v1")
	create(t, newPlacement("scoped", "one", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "scoped-1")}),
		newPlacement("scoped", "two", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "scoped-2")}),
		placed, other)
	waitFor(t, placed, func(g Gomega, a *hubv1alpha1.ServerlessApp) { g.Expect(a.Status.CellCount).To(Equal(1)) })
	waitFor(t, other, func(g Gomega, a *hubv1alpha1.ServerlessApp) { g.Expect(a.Status.CellCount).To(Equal(1)) })
	renders := func(app string) float64 {
		return testutil.ToFloat64(hubcontrollers.AppRenders.WithLabelValues("scoped", app))
	}
	settled := func() (float64, float64) {
		var p, o float64
		g.Eventually(func(g Gomega) {
			p, o = renders("placed"), renders("other")
			time.Sleep(time.Second)
			g.Expect(renders("placed")).To(Equal(p))
			g.Expect(renders("other")).To(Equal(o))
		}, timeout, poll).Should(Succeed())
		return p, o
	}

	// A Cell neither placement selects: no render at all.
	p0, o0 := settled()
	newCell(t, "sc-x", "member-sc-x", map[string]string{hubv1alpha1.LabelRegion: "scoped-elsewhere"})
	g.Eventually(func(g Gomega) {
		c := &hubv1alpha1.Cell{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Name: "sc-x"}, c)).To(Succeed())
		g.Expect(c.Status.Branch).NotTo(BeEmpty(), "the Cell was reconciled")
	}, timeout, poll).Should(Succeed())
	g.Consistently(func(g Gomega) {
		g.Expect(renders("placed")).To(Equal(p0))
		g.Expect(renders("other")).To(Equal(o0))
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())

	// A Cell one placement selects: that app renders into its branch, the other does not.
	newCell(t, "sc-b", "member-sc-b", map[string]string{hubv1alpha1.LabelRegion: "scoped-1"})
	waitFor(t, placed, func(g Gomega, a *hubv1alpha1.ServerlessApp) { g.Expect(a.Status.CellCount).To(Equal(2)) })
	g.Eventually(func(g Gomega) {
		g.Expect(heads(t)).To(HaveKey("cells/sc-b"))
	}, timeout, poll).Should(Succeed())
	g.Expect(renders("placed")).To(BeNumerically(">", p0))
	g.Consistently(func(g Gomega) {
		g.Expect(renders("other")).To(Equal(o0))
	}, 2*time.Second, 200*time.Millisecond).Should(Succeed())

	// A render visits the branches of the cells the app is placed on and of those it left,
	// not every cell branch of the fleet (there are many more here, from the other tests).
	visited := func() float64 {
		return testutil.ToFloat64(hubcontrollers.RenderedBranches.WithLabelValues("scoped", "placed"))
	}
	settled()
	// Branches of cells the app never had, as a fleet has: a render must not visit them.
	for i := range 20 {
		ref := fmt.Sprintf("refs/heads/cells/sc-fleet-%02d", i)
		_, err := testenv.Git(gitServer.RepoDir(repoName), "update-ref", ref, heads(t)["cells/sc-a"])
		g.Expect(err).NotTo(HaveOccurred())
		t.Cleanup(func() { _, _ = testenv.Git(gitServer.RepoDir(repoName), "update-ref", "-d", ref) })
	}
	before := visited()
	fleet := len(heads(t))
	pl := &hubv1alpha1.CellPlacement{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: "scoped", Name: "one"}, pl)).To(Succeed())
	pl.Spec.CellSelector = nil
	pl.Spec.Cells = []string{"sc-a", "sc-o"} // sc-b leaves, sc-o joins
	g.Expect(k8s.Update(ctx, pl)).To(Succeed())
	waitFor(t, placed, func(g Gomega, a *hubv1alpha1.ServerlessApp) {
		g.Expect(a.Status.Cells).To(Equal([]string{"sc-a", "sc-o"}))
	})
	g.Eventually(func() bool { return fileExists(t, "cells/sc-b", "apps/placed/service.yaml") }, timeout, poll).Should(BeFalse())
	g.Eventually(func() bool { return fileExists(t, "cells/sc-o", "apps/placed/service.yaml") }, timeout, poll).Should(BeTrue())
	settled()
	if got := visited() - before; got != 3 {
		t.Errorf("the placement change visited %v branches; want 3 (sc-a and sc-o placed, sc-b left) of the %d in the repository", got, fleet)
	}
}
