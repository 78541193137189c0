package manifests

import (
	"errors"
	"strings"
	"testing"
)

func TestBuildAndCheck(t *testing.T) {
	cm := func(ns, name string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\n"
	}
	tests := []struct {
		name    string
		files   map[string]string
		policy  Policy
		reason  string
		message string
		ids     []string
	}{
		{name: "ok", files: map[string]string{"kustomization.yaml": "resources:\n- a.yaml\n- b.yaml\n", "a.yaml": cm("apps", "a"), "b.yaml": cm("apps", "b")},
			policy: Policy{Namespaces: []string{"apps"}}, ids: []string{"apps_a__ConfigMap", "apps_b__ConfigMap"}},
		{name: "no kustomization", files: map[string]string{"a.yaml": cm("apps", "a")}, reason: ReasonBuildFailed, message: "no kustomization.yaml"},
		{name: "foreign namespace", files: map[string]string{"kustomization.yaml": "resources:\n- a.yaml\n", "a.yaml": cm("kube-system", "a")},
			policy: Policy{Namespaces: []string{"apps"}}, reason: ReasonPolicyViolation, message: `namespace "kube-system" is not one of the cell's namespaces`},
		{name: "cluster-scoped", files: map[string]string{"kustomization.yaml": "resources:\n- a.yaml\n", "a.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n"},
			policy: Policy{Namespaces: []string{"apps"}}, reason: ReasonPolicyViolation, message: "cluster-scoped objects are refused"},
		{name: "cluster-scoped allowed", files: map[string]string{"kustomization.yaml": "resources:\n- a.yaml\n", "a.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n"},
			policy: Policy{Namespaces: []string{"apps"}, AllowClusterScoped: true}, ids: []string{"_x__Namespace"}},
		{name: "kind not allowed", files: map[string]string{"kustomization.yaml": "resources:\n- a.yaml\n", "a.yaml": cm("apps", "a")},
			policy: Policy{Namespaces: []string{"apps"}, AllowedKinds: []string{"serving.knative.dev/Service"}}, reason: ReasonPolicyViolation, message: "not in the allowed kinds"},
		{name: "unknown kind", files: map[string]string{"kustomization.yaml": "resources:\n- a.yaml\n", "a.yaml": "apiVersion: x.io/v1\nkind: UnknownWidget\nmetadata:\n  name: w\n  namespace: apps\n"},
			policy: Policy{Namespaces: []string{"apps"}}, reason: ReasonPolicyViolation, message: "does not serve"},
		{name: "parent folder", files: map[string]string{"kustomization.yaml": "resources:\n- ../secrets\n"}, reason: ReasonBuildFailed, message: "outside the branch"},
		{name: "plugin", files: map[string]string{"kustomization.yaml": "generators:\n- gen.yaml\n"}, reason: ReasonBuildFailed, message: "plugins"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string][]byte{}
			for p, c := range tt.files {
				files[p] = []byte(c)
			}
			objs, err := Build(files)
			if err == nil {
				err = Check(objs, tt.policy, scopeByKind)
			}
			if tt.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, o := range objs {
					ids = append(ids, ID(o))
				}
				if strings.Join(ids, ",") != strings.Join(tt.ids, ",") {
					t.Fatalf("ids = %v, want %v", ids, tt.ids)
				}
				return
			}
			var inv *InvalidError
			if !errors.As(err, &inv) || inv.Reason != tt.reason || !strings.Contains(inv.Message, tt.message) {
				t.Fatalf("want %s containing %q, got %v", tt.reason, tt.message, err)
			}
		})
	}
}
