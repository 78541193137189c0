package manifests

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Policy is what a cell may create.
type Policy struct {
	Namespaces         []string
	AllowedKinds       []string
	AllowClusterScoped bool
}

// ScopeFunc says whether a kind is namespaced; unknown kinds return an error.
type ScopeFunc func(u *unstructured.Unstructured) (namespaced bool, err error)

// ScopeFromMapper answers ScopeFunc from a REST mapper.
func ScopeFromMapper(m meta.RESTMapper) ScopeFunc {
	return func(u *unstructured.Unstructured) (bool, error) {
		gvk := u.GroupVersionKind()
		mapping, err := m.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return false, err
		}
		return mapping.Scope.Name() == meta.RESTScopeNameNamespace, nil
	}
}

// Check applies the policy to every object and returns every violation at once. CRDs the branch
// itself brings (cluster-scoped, so only with AllowClusterScoped) make their kinds known.
func Check(objs []*unstructured.Unstructured, p Policy, scope ScopeFunc) error {
	owned := map[string]bool{}
	for _, n := range p.Namespaces {
		owned[n] = true
	}
	kinds := map[string]bool{}
	for _, k := range p.AllowedKinds {
		kinds[k] = true
	}
	var problems []string
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		id := fmt.Sprintf("%s %s", gvk.Kind, name(u))
		if len(kinds) > 0 && !kinds[gvk.Kind] && !kinds[gvk.Group+"/"+gvk.Kind] {
			problems = append(problems, fmt.Sprintf("%s: kind %s is not in the allowed kinds", id, groupKind(u)))
			continue
		}
		namespaced, err := scope(u)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: the cluster does not serve %s: %v", id, gvk.GroupVersion().String()+", Kind="+gvk.Kind, err))
			continue
		}
		switch {
		case !namespaced && !p.AllowClusterScoped:
			problems = append(problems, fmt.Sprintf("%s: cluster-scoped objects are refused (set policy.allowClusterScoped to allow them)", id))
		case namespaced && u.GetNamespace() == "":
			problems = append(problems, fmt.Sprintf("%s: has no namespace", id))
		case namespaced && !owned[u.GetNamespace()]:
			problems = append(problems, fmt.Sprintf("%s: namespace %q is not one of the cell's namespaces (%s)", id, u.GetNamespace(), strings.Join(p.Namespaces, ", ")))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	const maxShown = 10
	more := ""
	if len(problems) > maxShown {
		more = fmt.Sprintf(" (and %d more)", len(problems)-maxShown)
		problems = problems[:maxShown]
	}
	return invalid(ReasonPolicyViolation, "the branch breaks the cell's policy, nothing was applied: %s%s", strings.Join(problems, "; "), more)
}

func name(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetName()
	}
	return u.GetNamespace() + "/" + u.GetName()
}

func groupKind(u *unstructured.Unstructured) string {
	gvk := u.GroupVersionKind()
	if gvk.Group == "" {
		return gvk.Kind
	}
	return gvk.Group + "/" + gvk.Kind
}
