package hub

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/analysis"
)

// +kubebuilder:rbac:groups=hub.cellsync.io,resources=analysistemplates,verbs=list;watch

// loadTemplates reads and checks every AnalysisTemplate the canary strategy names, before
// anything is written: a missing or invalid template stalls the rollout with nothing in Git.
func (x *execution) loadTemplates(ctx context.Context) error {
	x.templates = map[string]*hubv1alpha1.AnalysisTemplate{}
	if !x.app.IsCanary() || x.app.Spec.Strategy.Canary == nil {
		return nil
	}
	strategy := x.app.Spec.Strategy.Canary
	refs := []*hubv1alpha1.StepAnalysis{strategy.Analysis}
	for i := range strategy.Steps {
		refs = append(refs, strategy.Steps[i].Analysis)
	}
	for _, ref := range refs {
		if ref == nil {
			continue
		}
		for _, t := range ref.Templates {
			if _, ok := x.templates[t.Name]; ok {
				continue
			}
			at := &hubv1alpha1.AnalysisTemplate{}
			if err := x.r.Get(ctx, client.ObjectKey{Namespace: x.app.Namespace, Name: t.Name}, at); err != nil {
				if apierrors.IsNotFound(err) {
					return &analysis.Error{Reason: hubv1alpha1.ReasonAnalysisTemplateNotFound,
						Message: fmt.Sprintf("AnalysisTemplate %q, named by the canary strategy, does not exist in namespace %q", t.Name, x.app.Namespace)}
				}
				return fmt.Errorf("failed to read AnalysisTemplate %q: %w", t.Name, err)
			}
			if err := analysis.Check(at); err != nil {
				return err
			}
			x.templates[t.Name] = at
		}
	}
	return nil
}

// stepTemplates are the templates measured at a step (1-based): the step's own, or else the
// strategy's.
func (x *execution) stepTemplates(step int32) []*hubv1alpha1.AnalysisTemplate {
	strategy := x.app.Spec.Strategy.Canary
	ref := strategy.Analysis
	if step >= 1 && int(step) <= len(strategy.Steps) && strategy.Steps[step-1].Analysis != nil {
		ref = strategy.Steps[step-1].Analysis
	}
	if ref == nil {
		return nil
	}
	out := make([]*hubv1alpha1.AnalysisTemplate, 0, len(ref.Templates))
	for _, t := range ref.Templates {
		if at := x.templates[t.Name]; at != nil {
			out = append(out, at)
		}
	}
	return out
}

// renderAnalysis is a canary cell's analysis at the current step, or nil when the step has
// none or the cell ran no earlier revision (nothing to compare a first deploy with).
func (x *execution) renderAnalysis(st *hubv1alpha1.RolloutStatus, cell *hubv1alpha1.Cell, targetNamespace, canaryRevision, stable string) (*agentv1alpha1.Analysis, error) {
	templates := x.stepTemplates(st.Step)
	if len(templates) == 0 || stable == "" {
		return nil, nil
	}
	return analysis.Render(templates, st.Step, st.AnalysisAttempt, analysis.Vars{
		App: x.app.Name, AppNamespace: x.app.Namespace, Namespace: targetNamespace, Cell: cell.Name,
		Stable: stable, Canary: canaryRevision,
	})
}

// rolloutsOfNamespace wakes every Rollout in a changed AnalysisTemplate's namespace: a fixed
// template brings a stalled rollout back.
func (r *RolloutReconciler) rolloutsOfNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	list := &hubv1alpha1.RolloutList{}
	if err := r.List(ctx, list, client.InNamespace(o.GetNamespace())); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list rollouts")
		return nil
	}
	return requestsOf(list.Items)
}
