package placement

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/render"
)

// Result is a resolved placement.
type Result struct {
	// Cells are the placed cells, sorted by name.
	Cells []*hubv1alpha1.Cell
	// Missing names explicitly listed cells that do not exist (yet).
	Missing []string
}

// Names returns the placed cells' names, sorted.
func (r *Result) Names() []string {
	out := make([]string, len(r.Cells))
	for i, c := range r.Cells {
		out[i] = c.Name
	}
	return out
}

// Resolve picks the placement's cells out of all cells. tenant is the tenant of the placement's
// namespace ("" for none); every resolved cell must carry the same tenant label.
func Resolve(p *hubv1alpha1.CellPlacement, cells []hubv1alpha1.Cell, tenant string) (*Result, error) {
	var sel labels.Selector
	if p.Spec.CellSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(p.Spec.CellSelector)
		if err != nil {
			return nil, invalid(hubv1alpha1.ReasonPlacementFailed, "cellSelector of placement %s/%s is invalid: %v", p.Namespace, p.Name, err)
		}
		sel = s
	}
	byName := make(map[string]*hubv1alpha1.Cell, len(cells))
	for i := range cells {
		byName[cells[i].Name] = &cells[i]
	}
	picked := map[string]*hubv1alpha1.Cell{}
	if sel != nil {
		for i := range cells {
			if cells[i].DeletionTimestamp.IsZero() && sel.Matches(labels.Set(cells[i].Labels)) {
				picked[cells[i].Name] = &cells[i]
			}
		}
	}
	res := &Result{}
	for _, name := range p.Spec.Cells {
		c, ok := byName[name]
		if !ok || !c.DeletionTimestamp.IsZero() {
			res.Missing = append(res.Missing, name)
			continue
		}
		picked[name] = c
	}
	if p.Spec.Topology == hubv1alpha1.TopologyCluster {
		clusters := map[string]bool{}
		for _, c := range picked {
			clusters[c.Spec.Cluster] = true
		}
		for i := range cells {
			if clusters[cells[i].Spec.Cluster] && cells[i].DeletionTimestamp.IsZero() {
				picked[cells[i].Name] = &cells[i]
			}
		}
	}
	var foreign []string
	for name, c := range picked {
		if c.Labels[hubv1alpha1.LabelTenant] != tenant {
			foreign = append(foreign, fmt.Sprintf("%s (tenant %q)", name, c.Labels[hubv1alpha1.LabelTenant]))
		}
		res.Cells = append(res.Cells, c)
	}
	if len(foreign) > 0 {
		sort.Strings(foreign)
		return nil, invalid(hubv1alpha1.ReasonTenantViolation,
			"placement %s/%s belongs to tenant %q but resolves cells of another tenant: %s; narrow the selector or move the placement to a namespace of that tenant",
			p.Namespace, p.Name, tenant, strings.Join(foreign, ", "))
	}
	sort.Slice(res.Cells, func(i, j int) bool { return res.Cells[i].Name < res.Cells[j].Name })
	sort.Strings(res.Missing)
	return res, nil
}

// OverridesFor returns, in order, the placement's overrides that select the cell.
func OverridesFor(p *hubv1alpha1.CellPlacement, cell *hubv1alpha1.Cell) ([]hubv1alpha1.CellOverride, error) {
	var out []hubv1alpha1.CellOverride
	for _, o := range p.Spec.Overrides {
		match, err := overrideSelects(o, cell)
		if err != nil {
			return nil, invalid(hubv1alpha1.ReasonOverrideFailed, "override %q of placement %s/%s has an invalid cellSelector: %v", o.Name, p.Namespace, p.Name, err)
		}
		if match {
			out = append(out, o)
		}
	}
	return out, nil
}

func overrideSelects(o hubv1alpha1.CellOverride, cell *hubv1alpha1.Cell) (bool, error) {
	for _, n := range o.Cells {
		if n == cell.Name {
			return true, nil
		}
	}
	if o.CellSelector == nil {
		return len(o.Cells) == 0, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(o.CellSelector)
	if err != nil {
		return false, err
	}
	return sel.Matches(labels.Set(cell.Labels)), nil
}

func invalid(reason, format string, args ...any) error {
	return &render.InvalidError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}
