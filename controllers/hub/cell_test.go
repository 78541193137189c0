package hub_test

import (
	"context"
	"testing"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// Two cells cannot share a branch: a cell that finds another on its branch (through the cache's
// branch index, not a scan of the fleet) is Stalled with reason Conflict, naming the other.
func TestCellsCannotShareABranch(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	cell := func(name string) *hubv1alpha1.Cell {
		return &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: hubv1alpha1.CellSpec{Cluster: "member-" + name, Namespaces: []string{"apps"}, Branch: "cells/shared-dup"}}
	}
	first, second := cell("dup-a"), cell("dup-b")
	g.Expect(k8s.Create(ctx, first)).To(Succeed())
	waitCell(t, first, func(g Gomega, c *hubv1alpha1.Cell) {
		g.Expect(c.Status.Branch).To(Equal("cells/shared-dup"))
		g.Expect(apimeta.IsStatusConditionTrue(c.Status.Conditions, meta.StalledCondition)).To(BeFalse())
	})
	g.Expect(k8s.Create(ctx, second)).To(Succeed())
	waitCell(t, second, func(g Gomega, c *hubv1alpha1.Cell) {
		stalled := apimeta.FindStatusCondition(c.Status.Conditions, meta.StalledCondition)
		g.Expect(stalled).NotTo(BeNil())
		g.Expect(stalled.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(stalled.Reason).To(Equal(hubv1alpha1.ReasonConflict))
		g.Expect(stalled.Message).To(ContainSubstring(`cell "dup-a" already uses branch "cells/shared-dup"`))
	})
}
