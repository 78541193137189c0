package hub

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/analysis"
	"github.com/cellsync/cellsync/hub/rollout"
)

// +kubebuilder:rbac:groups=hub.cellsync.io,resources=analysistemplates,verbs=list;watch

// loadTemplates reads and checks every AnalysisTemplate the canary strategy names, before
// anything is written: a missing or invalid template stalls the rollout with nothing in Git.
func (c *canary) loadTemplates(ctx context.Context) error {
	strategy := c.app.Spec.Strategy.Canary
	refs := []*hubv1alpha1.StepAnalysis{strategy.Analysis}
	for i := range strategy.Steps {
		refs = append(refs, strategy.Steps[i].Analysis)
	}
	c.templates = map[string]*hubv1alpha1.AnalysisTemplate{}
	for _, ref := range refs {
		if ref == nil {
			continue
		}
		for _, t := range ref.Templates {
			if _, ok := c.templates[t.Name]; ok {
				continue
			}
			at := &hubv1alpha1.AnalysisTemplate{}
			if err := c.r.Get(ctx, client.ObjectKey{Namespace: c.app.Namespace, Name: t.Name}, at); err != nil {
				if apierrors.IsNotFound(err) {
					return &analysis.Error{Reason: hubv1alpha1.ReasonAnalysisTemplateNotFound,
						Message: fmt.Sprintf("AnalysisTemplate %q, named by the canary strategy, does not exist in namespace %q", t.Name, c.app.Namespace)}
				}
				return fmt.Errorf("failed to read AnalysisTemplate %q: %w", t.Name, err)
			}
			if err := analysis.Check(at); err != nil {
				return err
			}
			c.templates[t.Name] = at
		}
	}
	return nil
}

// stepTemplates are the templates measured at a step (1-based): the step's own, or else the
// strategy's.
func (c *canary) stepTemplates(step int32) []*hubv1alpha1.AnalysisTemplate {
	strategy := c.app.Spec.Strategy.Canary
	ref := strategy.Analysis
	if step >= 1 && int(step) <= len(strategy.Steps) && strategy.Steps[step-1].Analysis != nil {
		ref = strategy.Steps[step-1].Analysis
	}
	if ref == nil {
		return nil
	}
	out := make([]*hubv1alpha1.AnalysisTemplate, 0, len(ref.Templates))
	for _, t := range ref.Templates {
		if at := c.templates[t.Name]; at != nil {
			out = append(out, at)
		}
	}
	return out
}

// renderAnalysis is a canary cell's analysis at the current step, or nil when the step has
// none or the cell ran no earlier revision (nothing to compare a first deploy with).
func (c *canary) renderAnalysis(cell *hubv1alpha1.Cell, targetNamespace, canaryRevision, stable string) (*agentv1alpha1.Analysis, error) {
	templates := c.stepTemplates(c.ro.Status.Step)
	if len(templates) == 0 || stable == "" {
		return nil, nil
	}
	return analysis.Render(templates, c.ro.Status.Step, c.ro.Status.AnalysisAttempt, analysis.Vars{
		App: c.app.Name, AppNamespace: c.app.Namespace, Namespace: targetNamespace, Cell: cell.Name,
		Stable: stable, Canary: canaryRevision,
	})
}

// showAnalyses writes each canary cell's reported analysis into the rollout's status, and where
// the step's analysis stands over its cells.
func (c *canary) showAnalyses(g rollout.Gate) {
	st := &c.ro.Status
	rank := map[hubv1alpha1.AnalysisPhase]int{"": 0, hubv1alpha1.AnalysisSuccessful: 1, hubv1alpha1.AnalysisRunning: 2, hubv1alpha1.AnalysisInconclusive: 3, hubv1alpha1.AnalysisFailed: 4}
	overall, any := hubv1alpha1.AnalysisPhase(""), false
	for i := range st.Cells {
		e := &st.Cells[i]
		if !e.Canary || e.Analysis == nil {
			continue
		}
		any = true
		phase := hubv1alpha1.AnalysisRunning
		e.Analysis.Metrics = nil
		if rep, ok := g.Analyses[e.Cell]; ok {
			phase = hubv1alpha1.AnalysisPhase(rep.Phase)
			for _, m := range rep.Metrics {
				if len(e.Analysis.Metrics) == hubv1alpha1.MaxAnalysisMetricsShown {
					break
				}
				e.Analysis.Metrics = append(e.Analysis.Metrics, metricResult(m))
			}
		}
		e.Analysis.Phase = phase
		if rank[phase] > rank[overall] {
			overall = phase
		}
	}
	if any {
		st.Analysis = overall
	}
}

func metricResult(m agentv1alpha1.MetricReport) hubv1alpha1.MetricResult {
	r := hubv1alpha1.MetricResult{Name: bound(m.Name, 63), Phase: hubv1alpha1.AnalysisPhase(m.Phase), Successful: m.Successful, Failed: m.Failed, Inconclusive: m.Inconclusive}
	if n := len(m.Measurements); n > 0 {
		last := m.Measurements[n-1]
		if last.Value != nil {
			r.Value = fmt.Sprintf("%g", *last.Value)
		}
		r.Message = bound(last.Message, 300)
	}
	return r
}

func bound(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// rolloutsOfNamespace wakes every Rollout in a changed AnalysisTemplate's namespace: a fixed
// template brings a stalled rollout back.
func (r *RolloutReconciler) rolloutsOfNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	list := &hubv1alpha1.RolloutList{}
	if err := r.List(ctx, list, client.InNamespace(o.GetNamespace())); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return out
}
