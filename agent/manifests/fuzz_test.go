package manifests

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// scopeByKind is a stand-in for the cluster's REST mapper: a few known cluster-scoped kinds,
// everything else namespaced, and kinds named "Unknown*" not served at all.
func scopeByKind(u *unstructured.Unstructured) (bool, error) {
	switch k := u.GetKind(); {
	case strings.HasPrefix(k, "Unknown"):
		return false, errUnknownKind
	case k == "Namespace" || k == "ClusterRole" || k == "CustomResourceDefinition":
		return false, nil
	}
	return true, nil
}

type unknownKind struct{}

func (unknownKind) Error() string { return "no matches for kind" }

var errUnknownKind = unknownKind{}

// FuzzBuildAndCheck feeds arbitrary branch contents through the loader and the policy guard.
// They must never panic, every object they pass must be a copyable Unstructured, and no object
// outside the cell's namespaces (or cluster-scoped) may pass the guard.
func FuzzBuildAndCheck(f *testing.F) {
	f.Add("resources:\n- a.yaml\n", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: apps\ndata:\n  n: \"1\"\n", "apps")
	f.Add("resources:\n- a.yaml\n", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: evil\n", "apps")
	f.Add("resources:\n- ../../etc/passwd\n", "", "apps")
	f.Add("resources:\n- https://github.com/x/y\n", "", "apps")
	f.Add("namespace: other\nresources:\n- a.yaml\n", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: apps\n", "apps")
	f.Add("resources:\n- a.yaml\n", "apiVersion: v1\nkind: UnknownThing\nmetadata:\n  name: x\n  namespace: apps\nspec:\n  replicas: 3\n", "apps")
	f.Fuzz(func(t *testing.T, kustomization, resource, namespace string) {
		objs, err := Load(mapTree{"kustomization.yaml": kustomization, "a.yaml": resource})
		if err != nil {
			return
		}
		for _, u := range objs {
			_ = u.DeepCopy() // must not panic: numbers must be int64/float64
		}
		p := Policy{Namespaces: []string{namespace}}
		if err := Check(objs, p, scopeByKind); err != nil {
			return
		}
		for _, u := range objs {
			namespaced, err := scopeByKind(u)
			if err != nil || !namespaced {
				t.Fatalf("%s %s passed the guard although it is cluster-scoped or unknown", u.GetKind(), u.GetName())
			}
			if u.GetNamespace() != namespace {
				t.Fatalf("%s %s in namespace %q passed a guard for %q", u.GetKind(), u.GetName(), u.GetNamespace(), namespace)
			}
		}
	})
}
