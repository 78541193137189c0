package hub_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

const errorRateQuery = `sum(rate(revision_app_request_count{namespace="{{namespace}}",revision_name="{{canary}}",response_code_class="5xx"}[1m])) / sum(rate(revision_app_request_count{namespace="{{namespace}}",revision_name="{{canary}}"}[1m]))`

func errorRateTemplate(ns, name, query string, min, max *float64) *hubv1alpha1.AnalysisTemplate {
	return &hubv1alpha1.AnalysisTemplate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: hubv1alpha1.AnalysisTemplateSpec{Metrics: []agentv1alpha1.AnalysisMetric{{
			Name: "error-rate", Interval: &metav1.Duration{Duration: time.Second}, Count: 2,
			ThresholdRange: agentv1alpha1.ThresholdRange{Min: min, Max: max},
			Prometheus:     &agentv1alpha1.PrometheusMetric{Query: query},
		}}},
	}
}

// waitStalledRollout waits for the rollout to stall with reason, and checks that no cell branch
// moved meanwhile.
func waitStalledRollout(t *testing.T, app *hubv1alpha1.ServerlessApp, reason, says string, unchanged map[string]string) {
	t.Helper()
	g := NewWithT(t)
	waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		stalled := apimeta.FindStatusCondition(r.Status.Conditions, meta.StalledCondition)
		g.Expect(stalled).NotTo(BeNil(), "rollout: %s", r.Status.Message)
		g.Expect(stalled.Reason).To(Equal(reason))
		g.Expect(stalled.Message).To(ContainSubstring(says))
	})
	g.Consistently(func(g Gomega) {
		g.Expect(cellHeads(t)).To(Equal(unchanged), "nothing may reach Git while the analysis is invalid")
	}, 2*time.Second, 250*time.Millisecond).Should(Succeed())
}

// Bad analysis input stalls the rollout with a reason and writes nothing; once fixed, the
// analysis is rendered into the step's cell (never listed in its kustomization), and the cell's
// verdicts decide the step: a failure aborts naming the cell, the metric and the value.
func TestAnalysisBadInputWritesNothing(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "anbad", "")
	for _, n := range []string{"an-a", "an-b"} {
		newCell(t, n, "member-"+n, map[string]string{hubv1alpha1.LabelRegion: "anbad"})
	}
	app := canaryApp("anbad", "web", "p", "ghcr.io/acme/web:v1", step(50, "an-a"), step(100))
	create(t, newPlacement("anbad", "p", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "anbad")}), app)
	agents := newCells(t)
	rev1 := setImage(t, app, "ghcr.io/acme/web:v1")
	waitStep(t, app, "2/2", hubv1alpha1.PhaseProgressing, 100)
	agents.readyAt(app, rev1, "an-a", "an-b")
	waitCompleted(t, app, rev1)
	h0 := cellHeads(t)

	// A missing template.
	g.Eventually(func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), app); err != nil {
			return err
		}
		app.Spec.Template.Image = "ghcr.io/acme/web:v2"
		app.Spec.Strategy.Canary.Analysis = &hubv1alpha1.StepAnalysis{Templates: []hubv1alpha1.AnalysisTemplateRef{{Name: "errors"}}}
		return k8s.Update(ctx, app)
	}, timeout, poll).Should(Succeed())
	waitStalledRollout(t, app, hubv1alpha1.ReasonAnalysisTemplateNotFound, `AnalysisTemplate "errors"`, h0)

	// Invalid PromQL, parsed by Prometheus's own parser.
	tmpl := errorRateTemplate("anbad", "errors", `sum(rate(revision_app_request_count[1m]`, nil, ptr.To(0.05))
	create(t, tmpl)
	waitStalledRollout(t, app, hubv1alpha1.ReasonInvalidAnalysis, "invalid PromQL", h0)

	// A threshold range with min above max.
	g.Eventually(func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(tmpl), tmpl); err != nil {
			return err
		}
		tmpl.Spec = errorRateTemplate("anbad", "errors", errorRateQuery, ptr.To(0.5), ptr.To(0.05)).Spec
		return k8s.Update(ctx, tmpl)
	}, timeout, poll).Should(Succeed())
	waitStalledRollout(t, app, hubv1alpha1.ReasonInvalidAnalysis, "min 0.5 is above max 0.05", h0)

	// Fixed: step 1 renders the analysis into an-a only, filled in for the cell.
	g.Eventually(func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(tmpl), tmpl); err != nil {
			return err
		}
		tmpl.Spec = errorRateTemplate("anbad", "errors", errorRateQuery, nil, ptr.To(0.05)).Spec
		return k8s.Update(ctx, tmpl)
	}, timeout, poll).Should(Succeed())
	rev2 := waitStep(t, app, "1/2", hubv1alpha1.PhaseProgressing, 50).Status.CanaryRevision
	head := heads(t)["cells/an-a"]
	g.Expect(heads(t)["cells/an-b"]).To(Equal(h0["cells/an-b"]))
	dir := checkout(t, "cells/an-a")
	raw, err := testenv.Git(dir, "show", "HEAD:"+agentv1alpha1.AnalysisPath("anbad", "web"))
	g.Expect(err).NotTo(HaveOccurred())
	an := &agentv1alpha1.Analysis{}
	g.Expect(yaml.UnmarshalStrict([]byte(raw), an)).To(Succeed())
	g.Expect(an.App).To(Equal("web"))
	g.Expect(an.Metrics).To(HaveLen(1))
	g.Expect(an.Metrics[0].Prometheus.Query).To(ContainSubstring(`revision_name="` + rev2 + `"`))
	g.Expect(an.Metrics[0].Prometheus.Query).NotTo(ContainSubstring("{{"))
	kust, err := testenv.Git(dir, "show", "HEAD:kustomization.yaml")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(kust).NotTo(ContainSubstring(".cellsync"), "the analysis is never applied")
	ro := waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Cells).NotTo(BeEmpty())
		g.Expect(r.Status.Cells[0].Analysis).NotTo(BeNil())
		g.Expect(r.Status.Cells[0].Analysis.ID).To(Equal(an.ID))
	})
	g.Expect(ro.Status.Analysis).To(Equal(hubv1alpha1.AnalysisRunning))

	// Ready without a verdict does not pass; a verdict for another commit does not count.
	value := 0.2
	failed := agentv1alpha1.AnalysisReport{ID: an.ID, App: "web", AppNamespace: "anbad", Commit: h0["cells/an-a"], Phase: agentv1alpha1.AnalysisFailed,
		Metrics: []agentv1alpha1.MetricReport{{Name: "error-rate", Phase: agentv1alpha1.AnalysisFailed, Failed: 1,
			Measurements: []agentv1alpha1.Measurement{{Phase: agentv1alpha1.AnalysisFailed, Value: &value, Message: "0.2 is above the maximum 0.05"}}}}}
	agents.report(app, cellReport{cell: "an-a", applied: head, revision: rev2, ready: true, analyses: []agentv1alpha1.AnalysisReport{failed}})
	g.Consistently(func(g Gomega) {
		r := &hubv1alpha1.Rollout{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ro), r)).To(Succeed())
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhaseProgressing), "a verdict for another commit decided the step: %s", r.Status.Message)
	}, 2*time.Second, 250*time.Millisecond).Should(Succeed())

	// The verdict for the step's commit: failed, the rollout aborts and says why.
	failed.Commit = head
	agents.report(app, cellReport{cell: "an-a", applied: head, revision: rev2, ready: true, analyses: []agentv1alpha1.AnalysisReport{failed}})
	ro = waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhaseAborted))
		g.Expect(r.Status.Message).To(ContainSubstring("an-a: analysis failed: metric error-rate = 0.2 (0.2 is above the maximum 0.05)"))
		g.Expect(r.Status.Analysis).To(Equal(hubv1alpha1.AnalysisFailed))
	})
	expectEvent(t, ro, corev1.EventTypeWarning, hubv1alpha1.ReasonAborted)
	g.Expect(tree(t, heads(t)["cells/an-a"])).To(Equal(tree(t, h0["cells/an-a"])), "an-a is back at its last-known-good tree")
	g.Expect(strings.Contains(getRollouts(t, "anbad"), "Failed")).To(BeTrue(), "kubectl get rollouts shows the ANALYSIS column")
	// kubectl cells status shows what judged each cell.
	out := kubectlCells(t, "status", "web", "-n", "anbad")
	g.Expect(out).To(ContainSubstring("Analysis of step 1/2: Failed"))
	g.Expect(out).To(MatchRegexp(`(?m)^an-a\s+error-rate\s+Failed\s+0\.2\s+0/1/0\s+0\.2 is above the maximum 0\.05$`))
}

// An inconclusive analysis pauses the rollout and says what to do; a Resume measures the step
// again under a new id, and a success then moves the rollout on.
func TestAnalysisInconclusiveResumeMeasuresAgain(t *testing.T) {
	g := NewWithT(t)
	newNamespace(t, "aninc", "")
	for _, n := range []string{"ai-a", "ai-b"} {
		newCell(t, n, "member-"+n, map[string]string{hubv1alpha1.LabelRegion: "aninc"})
	}
	app := canaryApp("aninc", "web", "p", "ghcr.io/acme/web:v1", step(50, "ai-a"), step(100))
	app.Spec.Strategy.Canary.Analysis = &hubv1alpha1.StepAnalysis{Templates: []hubv1alpha1.AnalysisTemplateRef{{Name: "errors"}}}
	create(t, errorRateTemplate("aninc", "errors", errorRateQuery, nil, ptr.To(0.05)),
		newPlacement("aninc", "p", hubv1alpha1.CellPlacementSpec{CellSelector: selectLabels(hubv1alpha1.LabelRegion, "aninc")}), app)
	agents := newCells(t)
	rev1 := setImage(t, app, "ghcr.io/acme/web:v1")
	// A first deploy has nothing to compare: no analysis, straight to the last step.
	waitStep(t, app, "2/2", hubv1alpha1.PhaseProgressing, 100)
	agents.readyAt(app, rev1, "ai-a", "ai-b")
	waitCompleted(t, app, rev1)

	rev2 := setImage(t, app, "ghcr.io/acme/web:v2")
	ro := waitStep(t, app, "1/2", hubv1alpha1.PhaseProgressing, 50)
	first := ro.Status.Cells[0].Analysis.ID
	head := cellHeads(t)["cells/ai-a"]
	verdict := func(id, commit, phase string) agentv1alpha1.AnalysisReport {
		return agentv1alpha1.AnalysisReport{ID: id, App: "web", AppNamespace: "aninc", Commit: commit, Phase: phase,
			Metrics: []agentv1alpha1.MetricReport{{Name: "error-rate", Phase: phase, Query: "sum(rate(revision_app_request_count[1m]))",
				Measurements: []agentv1alpha1.Measurement{{Phase: agentv1alpha1.AnalysisInconclusive, Message: "Prometheus did not answer the query"}}}}}
	}
	agents.report(app, cellReport{cell: "ai-a", applied: head, revision: rev2, ready: true,
		analyses: []agentv1alpha1.AnalysisReport{verdict(first, head, agentv1alpha1.AnalysisInconclusive)}})
	waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhasePaused))
		g.Expect(r.Status.Analysis).To(Equal(hubv1alpha1.AnalysisInconclusive))
		ready := apimeta.FindStatusCondition(r.Status.Conditions, meta.ReadyCondition)
		g.Expect(ready.Reason).To(Equal(hubv1alpha1.ReasonAnalysisInconclusive))
		g.Expect(r.Status.Message).To(ContainSubstring("ai-a: analysis inconclusive: metric error-rate (query sum(rate(revision_app_request_count[1m])))"))
		g.Expect(r.Status.Message).To(ContainSubstring("kubectl cells resume web -n aninc"))
	})
	g.Consistently(func(g Gomega) {
		g.Expect(cellHeads(t)["cells/ai-a"]).To(Equal(head), "an inconclusive step writes nothing")
	}, 2*time.Second, 250*time.Millisecond).Should(Succeed())

	// Resume: the step's analysis is rendered again under a new id.
	create(t, newStep("aninc", "web-resume", "web", hubv1alpha1.ActionResume))
	ro = waitRollout(t, rolloutOf(app), func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.AnalysisAttempt).To(Equal(int32(1)))
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhaseProgressing))
		g.Expect(r.Status.Cells[0].Analysis).NotTo(BeNil())
		g.Expect(r.Status.Cells[0].Analysis.ID).NotTo(Equal(first))
	})
	second := ro.Status.Cells[0].Analysis.ID
	retried := cellHeads(t)["cells/ai-a"]
	g.Expect(retried).NotTo(Equal(head))
	raw, err := testenv.Git(checkout(t, "cells/ai-a"), "show", "HEAD:"+agentv1alpha1.AnalysisPath("aninc", "web"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(raw).To(ContainSubstring("id: " + second))

	// Measured again, successfully: the rollout moves on to its last step.
	agents.report(app, cellReport{cell: "ai-a", applied: retried, revision: rev2, ready: true,
		analyses: []agentv1alpha1.AnalysisReport{verdict(second, retried, agentv1alpha1.AnalysisSuccessful)}})
	waitStep(t, app, "2/2", hubv1alpha1.PhaseProgressing, 100)
}
