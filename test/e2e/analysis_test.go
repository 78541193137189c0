package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

const analysisFile = "apps/analysis.yaml"

// analysisApps is an error-rate AnalysisTemplate over Knative's queue-proxy request metrics, a
// placement over the world's cells, and a canary app measured at every step.
func analysisApps(image string) string {
	return testenv.ErrorRateTemplate() + fmt.Sprintf(`---
apiVersion: hub.cellsync.io/v1alpha1
kind: CellPlacement
metadata: {name: analysis, namespace: %[1]s}
spec:
  cellSelector:
    matchLabels: {cellsync.io/env: demo}
---
apiVersion: hub.cellsync.io/v1alpha1
kind: ServerlessApp
metadata: {name: checkout, namespace: %[1]s}
spec:
  placementRef: {name: analysis}
  template: {image: %[2]q}
`, testenv.WorldAppsNamespace, image) + testenv.SampleStrategy(5*time.Minute, "error-rate")
}

// Canary analysis end to end with Debian's real Prometheus in every member, scraping a
// synthetic queue-proxy exporter the test controls: the PromQL is evaluated by the real server,
// the verdicts travel through Git, and the hub decides.
func TestCanaryAnalysis(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	exporters := map[string]*testenv.Exporter{}
	proms := map[string]*testenv.Prometheus{}
	for _, m := range world.Members {
		// The cell's owner points its agent at the cell's Prometheus.
		cm, err := m.StartCellMetrics(ctx)
		g.Expect(err).NotTo(HaveOccurred())
		exporters[m.Cell], proms[m.Cell] = cm.Exporter, cm.Prometheus
		t.Cleanup(cm.Stop)
	}
	key := client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: "checkout"}
	get := func(g Gomega) *hubv1alpha1.Rollout {
		ro := &hubv1alpha1.Rollout{}
		g.Expect(world.HubClient.Get(ctx, key, ro)).To(Succeed())
		return ro
	}
	// ship pushes an image and sets each cell's synthetic error rate for its revision.
	ship := func(image string, errorRates map[string]float64) string {
		old := ""
		app := &hubv1alpha1.ServerlessApp{}
		if world.HubClient.Get(ctx, key, app) == nil {
			old = app.Status.Revision
		}
		push(t, "checkout "+image, map[string]string{analysisFile: analysisApps(image)})
		var rev string
		g.Eventually(func(g Gomega) {
			g.Expect(world.HubClient.Get(ctx, key, app)).To(Succeed())
			g.Expect(app.Status.Revision).NotTo(BeEmpty())
			g.Expect(app.Status.Revision).NotTo(Equal(old))
			rev = app.Status.Revision
		}, timeout, 200*time.Millisecond).Should(Succeed())
		for cell, exp := range exporters {
			exp.SetErrorRate(rev, errorRates[cell])
		}
		return rev
	}

	ship("ghcr.io/knative/helloworld-go:checkout-1", nil)
	appReadyEverywhere(t, "checkout", "ghcr.io/knative/helloworld-go:checkout-1")

	t.Run("a healthy canary walks every step on successful analyses", func(t *testing.T) {
		g := NewWithT(t)
		rev := ship("ghcr.io/knative/helloworld-go:checkout-2", map[string]float64{})
		seen, measured := map[string]bool{}, map[string]string{}
		g.Eventually(func(g Gomega) {
			ro := get(g)
			if ro.Status.Phase == hubv1alpha1.PhaseProgressing {
				seen[ro.Status.StepDisplay] = true
			}
			for _, c := range ro.Status.Cells {
				if c.Analysis != nil && len(c.Analysis.Metrics) > 0 && c.Analysis.Metrics[0].Value != "" {
					measured[c.Cell] = c.Analysis.Metrics[0].Value
				}
			}
			g.Expect(ro.Status.Phase).To(Equal(hubv1alpha1.PhaseCompleted), "rollout %s: %s", ro.Status.StepDisplay, ro.Status.Message)
			g.Expect(ro.Status.StableRevision).To(Equal(rev), "the new revision completed, not the last one")
		}, 2*timeout, 200*time.Millisecond).Should(Succeed())
		g.Expect(seen).To(HaveKey("1/3"))
		g.Expect(seen).To(HaveKey("2/3"))
		g.Expect(measured).To(HaveKeyWithValue("cell-1", "0"), "cell-1's measured error rate is in the rollout's status")
		g.Expect(measured).To(HaveKeyWithValue("cell-2", "0"))
		g.Expect(get(g).Status.Analysis).To(Equal(hubv1alpha1.AnalysisSuccessful))
		appReadyEverywhere(t, "checkout", "ghcr.io/knative/helloworld-go:checkout-2")
	})

	t.Run("20 % errors in cell-2 abort at the first step that includes it", func(t *testing.T) {
		g := NewWithT(t)
		before := cellHeads(t)
		rev := ship("ghcr.io/knative/helloworld-go:checkout-3", map[string]float64{"cell-2": 0.2})
		seen := map[string]bool{}
		var ro *hubv1alpha1.Rollout
		g.Eventually(func(g Gomega) {
			ro = get(g)
			if ro.Status.Phase == hubv1alpha1.PhaseProgressing {
				seen[ro.Status.StepDisplay] = true
			}
			g.Expect(ro.Status.Phase).To(Equal(hubv1alpha1.PhaseAborted), "rollout %s: %s", ro.Status.StepDisplay, ro.Status.Message)
			g.Expect(ro.Status.CanaryRevision).To(Equal(rev))
		}, 2*timeout, 200*time.Millisecond).Should(Succeed())
		const verdict = "cell-2: analysis failed: metric error-rate = 0.2 (0.2 is above the maximum 0.05)"
		g.Expect(ro.Status.Message).To(ContainSubstring(verdict))
		g.Expect(seen).To(HaveKey("2/3"))
		g.Expect(seen).NotTo(HaveKey("3/3"))
		g.Expect(ro.Status.Analysis).To(Equal(hubv1alpha1.AnalysisFailed))
		backAtTrees(t, before)
		// The step that included cell-2 says why, and so does the Warning event.
		steps := &hubv1alpha1.RolloutStepList{}
		g.Expect(world.HubClient.List(ctx, steps, client.InNamespace(testenv.WorldAppsNamespace))).To(Succeed())
		found := false
		for _, s := range steps.Items {
			if s.Spec.RolloutRef.Name == "checkout" && s.Spec.Revision == rev && s.Spec.Step != nil && *s.Spec.Step == 2 {
				found = true
				g.Expect(s.Status.Message).To(ContainSubstring(verdict))
			}
		}
		g.Expect(found).To(BeTrue(), "the RolloutStep of step 2")
		g.Eventually(func(g Gomega) {
			events := &corev1.EventList{}
			g.Expect(world.HubClient.List(ctx, events, client.InNamespace(testenv.WorldAppsNamespace))).To(Succeed())
			var warnings []string
			for _, e := range events.Items {
				if e.InvolvedObject.Kind == "Rollout" && e.InvolvedObject.Name == "checkout" && e.Type == corev1.EventTypeWarning && e.Reason == hubv1alpha1.ReasonAborted {
					warnings = append(warnings, e.Message)
				}
			}
			g.Expect(strings.Join(warnings, "\n")).To(ContainSubstring(verdict))
		}, timeout, time.Second).Should(Succeed())
	})

	t.Run("a stopped Prometheus pauses the rollout as inconclusive instead of passing it", func(t *testing.T) {
		g := NewWithT(t)
		proms["cell-3"].Stop()
		rev := ship("ghcr.io/knative/helloworld-go:checkout-4", map[string]float64{})
		g.Eventually(func(g Gomega) {
			ro := get(g)
			g.Expect(ro.Status.CanaryRevision).To(Equal(rev))
			g.Expect(ro.Status.Phase).To(Equal(hubv1alpha1.PhasePaused), "rollout %s: %s", ro.Status.StepDisplay, ro.Status.Message)
			g.Expect(ro.Status.StepDisplay).To(Equal("3/3"))
			g.Expect(ro.Status.Analysis).To(Equal(hubv1alpha1.AnalysisInconclusive))
			g.Expect(ro.Status.Message).To(ContainSubstring("cell-3: analysis inconclusive: metric error-rate (query sum(rate(revision_app_request_count"))
			ready := apimeta.FindStatusCondition(ro.Status.Conditions, "Ready")
			g.Expect(ready).NotTo(BeNil())
			g.Expect(ready.Reason).To(Equal(hubv1alpha1.ReasonAnalysisInconclusive))
		}, 2*timeout, 200*time.Millisecond).Should(Succeed())
		g.Consistently(func(g Gomega) {
			g.Expect(get(g).Status.Phase).To(Equal(hubv1alpha1.PhasePaused), "an inconclusive analysis never passes")
		}, 3*poll, 500*time.Millisecond).Should(Succeed())
	})

	// The world goes on without the app. envtest runs no garbage collector: the app's Rollout,
	// which it owns, is deleted by hand as Kubernetes would.
	push(t, "Remove checkout", map[string]string{analysisFile: ""})
	g.Eventually(func(g Gomega) {
		for _, m := range world.Members {
			g.Expect(service(g, m, "checkout")).To(BeNil(), "checkout still runs in %s", m.Name)
		}
		err := world.HubClient.Get(ctx, key, &hubv1alpha1.ServerlessApp{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the app is gone from the hub")
	}, timeout, time.Second).Should(Succeed())
	g.Expect(client.IgnoreNotFound(world.HubClient.Delete(ctx, &hubv1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}))).To(Succeed())
}
