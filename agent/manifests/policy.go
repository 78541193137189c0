package manifests

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
)

// Policy is what a cell may create. It is the member cluster's word: nothing in a branch can
// widen it.
type Policy struct {
	Namespaces []string
	// AllowedKinds, when set, lists the only kinds allowed, group-qualified as kubectl writes
	// them: "Service" is core/v1's, "Service.serving.knative.dev" Knative's.
	AllowedKinds       []string
	AllowClusterScoped bool
	// AllowRBAC lets the branch create Roles, RoleBindings (and, with AllowClusterScoped, their
	// cluster-wide kinds) and service-account token Secrets.
	AllowRBAC bool
	// PodSecurity is the Pod Security Standard every pod and pod template must meet:
	// privileged, baseline (the default) or restricted.
	PodSecurity string
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

// ReservedGroupSuffix marks cellsync's own API groups, which no branch may carry: a CellSync in
// a branch would let the branch choose its own policy.
const ReservedGroupSuffix = "cellsync.io"

var rbacKinds = map[string]bool{"Role": true, "RoleBinding": true, "ClusterRole": true, "ClusterRoleBinding": true}

// Check applies the policy to every object and returns every violation at once.
func Check(objs []*unstructured.Unstructured, p Policy, scope ScopeFunc) error {
	level, err := psaapi.ParseLevel(p.podSecurity())
	if err != nil {
		return invalid(ReasonPolicyViolation, "the CellSync's policy.podSecurity %q is not privileged, baseline or restricted", p.PodSecurity)
	}
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
		if problem := checkOne(u, p, owned, kinds, scope); problem != "" {
			problems = append(problems, fmt.Sprintf("%s %s: %s", u.GetKind(), name(u), problem))
			continue
		}
		if problem := checkPodSecurity(u, level); problem != "" {
			problems = append(problems, fmt.Sprintf("%s %s: %s", u.GetKind(), name(u), problem))
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

func (p Policy) podSecurity() string {
	if p.PodSecurity == "" {
		return string(psaapi.LevelBaseline)
	}
	return p.PodSecurity
}

// checkOne says what is wrong with one object's kind, scope and namespace, or "".
func checkOne(u *unstructured.Unstructured, p Policy, owned, kinds map[string]bool, scope ScopeFunc) string {
	gvk := u.GroupVersionKind()
	qualified := QualifiedKind(gvk.Group, gvk.Kind)
	switch {
	case gvk.Group == ReservedGroupSuffix || strings.HasSuffix(gvk.Group, "."+ReservedGroupSuffix):
		return fmt.Sprintf("objects of cellsync's own API (%s) are never applied from a branch", gvk.Group)
	case len(kinds) > 0 && !kinds[qualified]:
		return fmt.Sprintf("kind %s is not in the allowed kinds", qualified)
	case gvk.Group == "rbac.authorization.k8s.io" && rbacKinds[gvk.Kind] && !p.AllowRBAC:
		return "RBAC objects are refused (set policy.allowRBAC to allow them)"
	case gvk.Group == "" && gvk.Kind == "Secret" && isTokenSecret(u) && !p.AllowRBAC:
		return "service-account token Secrets are refused (set policy.allowRBAC to allow them)"
	}
	namespaced, err := scope(u)
	switch {
	case err != nil:
		return fmt.Sprintf("the cluster does not serve %s, Kind=%s: %v", gvk.GroupVersion(), gvk.Kind, err)
	case !namespaced && !p.AllowClusterScoped:
		return "cluster-scoped objects are refused (set policy.allowClusterScoped to allow them)"
	case namespaced && u.GetNamespace() == "":
		return "has no namespace"
	case namespaced && !owned[u.GetNamespace()]:
		return fmt.Sprintf("namespace %q is not one of the cell's namespaces (%s)", u.GetNamespace(), strings.Join(p.Namespaces, ", "))
	}
	return ""
}

// QualifiedKind writes a kind as policy.allowedKinds does: Kind for the core group,
// Kind.group otherwise.
func QualifiedKind(group, kind string) string {
	if group == "" {
		return kind
	}
	return kind + "." + group
}

func isTokenSecret(u *unstructured.Unstructured) bool {
	t, _, _ := unstructured.NestedString(u.Object, "type")
	return t == string(corev1.SecretTypeServiceAccountToken)
}

// podTemplatePaths is where each workload kind keeps its pod (metadata and spec).
var podTemplatePaths = map[string][]string{
	"/Pod":                              nil,
	"/PodTemplate":                      {"template"},
	"/ReplicationController":            {"spec", "template"},
	"apps/Deployment":                   {"spec", "template"},
	"apps/StatefulSet":                  {"spec", "template"},
	"apps/DaemonSet":                    {"spec", "template"},
	"apps/ReplicaSet":                   {"spec", "template"},
	"batch/Job":                         {"spec", "template"},
	"batch/CronJob":                     {"spec", "jobTemplate", "spec", "template"},
	"serving.knative.dev/Service":       {"spec", "template"},
	"serving.knative.dev/Configuration": {"spec", "template"},
	"serving.knative.dev/Revision":      nil,
}

var evaluator = func() psapolicy.Evaluator {
	e, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		panic(fmt.Sprintf("the pod security checks do not load: %v", err)) // a build defect, not input
	}
	return e
}()

// checkPodSecurity runs the Pod Security Standard checks of k8s.io/pod-security-admission on
// the object's pod, or pod template, and says what fails, or "".
func checkPodSecurity(u *unstructured.Unstructured, level psaapi.Level) string {
	gvk := u.GroupVersionKind()
	at, ok := podTemplatePaths[gvk.Group+"/"+gvk.Kind]
	if !ok || level == psaapi.LevelPrivileged {
		return ""
	}
	tmpl := u.Object
	if len(at) > 0 {
		m, found, err := unstructured.NestedMap(u.Object, at...)
		if err != nil {
			return fmt.Sprintf("%s is not a pod template", strings.Join(at, "."))
		}
		if !found {
			return ""
		}
		tmpl = m
	}
	var pod struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     corev1.PodSpec    `json:"spec"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, &pod); err != nil {
		return fmt.Sprintf("the pod template cannot be read: %v", err)
	}
	results := evaluator.EvaluatePod(psaapi.LevelVersion{Level: level, Version: psaapi.LatestVersion()}, &pod.Metadata, &pod.Spec)
	agg := psapolicy.AggregateCheckResults(results)
	if agg.Allowed {
		return ""
	}
	return fmt.Sprintf("violates the %q Pod Security Standard (policy.podSecurity): %s", level, agg.ForbiddenDetail())
}

func name(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetName()
	}
	return u.GetNamespace() + "/" + u.GetName()
}
