package manifests

import (
	"errors"
	"strings"
	"testing"
)

// mapTree is a branch held in memory; paths ending in "/" are directories, "@link" values
// symlinks.
type mapTree map[string]string

func (m mapTree) Entry(p string) (EntryKind, int64, bool) {
	if v, ok := m[p]; ok {
		if strings.HasPrefix(v, "@link") {
			return Symlink, int64(len(v)), true
		}
		return RegularFile, int64(len(v)), true
	}
	for k := range m {
		if strings.HasPrefix(k, p+"/") {
			return Directory, 0, true
		}
	}
	return 0, 0, false
}

func (m mapTree) Read(p string) ([]byte, error) { return []byte(m[p]), nil }

func cm(ns, name string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\n"
}

const kz = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"

func TestLoadAndCheck(t *testing.T) {
	apps := Policy{Namespaces: []string{"apps"}}
	privileged := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: apps\nspec:\n  hostPID: true\n  containers:\n  - name: c\n    image: x\n    securityContext:\n      privileged: true\n  volumes:\n  - name: root\n    hostPath:\n      path: /\n"
	ksvc := func(sc string) string {
		return "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  template:\n    spec:\n      containerConcurrency: 10\n      containers:\n      - image: x\n" + sc
	}
	tests := []struct {
		name    string
		files   mapTree
		policy  Policy
		reason  string
		message string
		ids     []string
	}{
		{name: "ok", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n- web/b.yaml\n", "a.yaml": cm("apps", "a"), "web/b.yaml": cm("apps", "b"), ".cellsync/cell.yaml": "cell: x\n"},
			policy: apps, ids: []string{"apps_a__ConfigMap", "apps_b__ConfigMap"}},
		{name: "no kustomization", files: mapTree{"a.yaml": cm("apps", "a")}, reason: ReasonInvalidBranch, message: "no kustomization.yaml"},
		{name: "unlisted files are not read", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": cm("apps", "a"), "b.yaml": "{{{ not yaml"}, policy: apps, ids: []string{"apps_a__ConfigMap"}},
		{name: "foreign namespace", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": cm("kube-system", "a")},
			policy: apps, reason: ReasonPolicyViolation, message: `namespace "kube-system" is not one of the cell's namespaces`},
		{name: "cluster-scoped", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n"},
			policy: apps, reason: ReasonPolicyViolation, message: "cluster-scoped objects are refused"},
		{name: "cluster-scoped allowed", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n"},
			policy: Policy{Namespaces: []string{"apps"}, AllowClusterScoped: true}, ids: []string{"_x__Namespace"}},
		{name: "kind not allowed", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": cm("apps", "a")},
			policy: Policy{Namespaces: []string{"apps"}, AllowedKinds: []string{"Service.serving.knative.dev"}}, reason: ReasonPolicyViolation, message: "kind ConfigMap is not in the allowed kinds"},
		{name: "Service means core Service only", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": ksvc("")},
			policy: Policy{Namespaces: []string{"apps"}, AllowedKinds: []string{"Service"}}, reason: ReasonPolicyViolation, message: "kind Service.serving.knative.dev is not in the allowed kinds"},
		{name: "Knative Service allowed by its group", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": ksvc("")},
			policy: Policy{Namespaces: []string{"apps"}, AllowedKinds: []string{"Service.serving.knative.dev"}}, ids: []string{"apps_web_serving.knative.dev_Service"}},
		{name: "core NodePort Service against a Knative allow-list", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: np\n  namespace: apps\nspec:\n  type: NodePort\n"},
			policy: Policy{Namespaces: []string{"apps"}, AllowedKinds: []string{"Service.serving.knative.dev"}}, reason: ReasonPolicyViolation, message: "kind Service is not in the allowed kinds"},
		{name: "unknown kind", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": "apiVersion: x.io/v1\nkind: UnknownWidget\nmetadata:\n  name: w\n  namespace: apps\n"},
			policy: apps, reason: ReasonPolicyViolation, message: "does not serve"},
		{name: "cellsync object", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": "apiVersion: agent.cellsync.io/v1alpha1\nkind: CellSync\nmetadata:\n  name: evil\n  namespace: apps\nspec:\n  policy:\n    namespaces: [kube-system]\n"},
			policy: Policy{Namespaces: []string{"apps"}, AllowClusterScoped: true, AllowRBAC: true}, reason: ReasonPolicyViolation, message: "objects of cellsync's own API (agent.cellsync.io) are never applied"},
		{name: "RBAC refused", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: rb\n  namespace: apps\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: admin\n"},
			policy: apps, reason: ReasonPolicyViolation, message: "RBAC objects are refused (set policy.allowRBAC"},
		{name: "RBAC allowed", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: r\n  namespace: apps\n"},
			policy: Policy{Namespaces: []string{"apps"}, AllowRBAC: true}, ids: []string{"apps_r_rbac.authorization.k8s.io_Role"}},
		{name: "token Secret", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/service-account-token\nmetadata:\n  name: t\n  namespace: apps\n  annotations:\n    kubernetes.io/service-account.name: default\n"},
			policy: apps, reason: ReasonPolicyViolation, message: "service-account token Secrets are refused"},
		{name: "privileged pod", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": privileged},
			policy: apps, reason: ReasonPolicyViolation, message: `violates the "baseline" Pod Security Standard`},
		{name: "privileged pod allowed by privileged level", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": privileged},
			policy: Policy{Namespaces: []string{"apps"}, PodSecurity: "privileged"}, ids: []string{"apps_p__Pod"}},
		{name: "privileged Knative template", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": ksvc("        securityContext:\n          privileged: true\n")},
			policy: apps, reason: ReasonPolicyViolation, message: "privileged"},
		{name: "restricted level", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": ksvc("")},
			policy: Policy{Namespaces: []string{"apps"}, PodSecurity: "restricted"}, reason: ReasonPolicyViolation, message: `"restricted" Pod Security Standard`},
		{name: "privileged CronJob template", files: mapTree{"kustomization.yaml": kz + "- a.yaml\n", "a.yaml": "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: c\n  namespace: apps\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          hostNetwork: true\n          containers:\n          - name: c\n            image: x\n"},
			policy: apps, reason: ReasonPolicyViolation, message: "hostNetwork"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Load(tt.files)
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

// Everything kustomize would build or fetch is refused by name, before any of it is read.
func TestLoadRefusesAnythingButAPlainList(t *testing.T) {
	tests := []struct {
		name, kustomization, message string
		extra                        mapTree
	}{
		{"bases", "bases:\n- https://github.com/org/repo//config\n", `uses "bases"`, nil},
		{"configMapGenerator with a URL", "configMapGenerator:\n- name: x\n  files:\n  - http://127.0.0.1:1/x\n", `uses "configMapGenerator"`, nil},
		{"openapi", "openapi:\n  path: http://127.0.0.1:1/schema.json\n", `uses "openapi"`, nil},
		{"crds", "crds:\n- http://127.0.0.1:1/crd.yaml\n", `uses "crds"`, nil},
		{"configurations", "configurations:\n- http://127.0.0.1:1/c.yaml\n", `uses "configurations"`, nil},
		{"replacements", "replacements:\n- path: http://127.0.0.1:1/r.yaml\n", `uses "replacements"`, nil},
		{"patchesStrategicMerge", "patchesStrategicMerge:\n- http://127.0.0.1:1/p.yaml\n", `uses "patchesStrategicMerge"`, nil},
		{"namespace override", "namespace: kube-system\nresources:\n- a.yaml\n", `uses "namespace"`, mapTree{"a.yaml": cm("apps", "a")}},
		{"helm", "helmCharts:\n- name: x\n", `uses "helmCharts"`, nil},
		{"remote resource", kz + "- https://github.com/example/evil//config?ref=main\n", "a remote location", nil},
		{"GitHub shorthand", kz + "- GitHub.com/org/repo\n", "does not have", nil},
		{"scp form", kz + "- host.example:org/repo\n", "does not have", nil},
		{"parent folder", kz + "- ../secrets.yaml\n", "not a clean path", nil},
		{"absolute", kz + "- /etc/passwd.yaml\n", "absolute path", nil},
		{"directory", kz + "- web\n", "which is a directory", mapTree{"web/a.yaml": cm("apps", "a")}},
		{"symlink", kz + "- link.yaml\n", "which is a symlink", mapTree{"link.yaml": "@link /etc/passwd"}},
		{"not yaml", kz + "- a.txt\n", "reads .yaml", mapTree{"a.txt": "x"}},
		{"twice", kz + "- a.yaml\n- a.yaml\n", "twice", mapTree{"a.yaml": cm("apps", "a")}},
		{"same object twice", kz + "- a.yaml\n- b.yaml\n", "is in both a.yaml and b.yaml", mapTree{"a.yaml": cm("apps", "a"), "b.yaml": cm("apps", "a")}},
		{"a List", kz + "- a.yaml\n", "lists are not applied", mapTree{"a.yaml": "apiVersion: v1\nkind: List\nmetadata:\n  name: l\nitems: []\n"}},
		{"too large", kz + "- a.yaml\n", "at most 4194304 per file", mapTree{"a.yaml": strings.Repeat("#", MaxFileBytes+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := mapTree{"kustomization.yaml": tt.kustomization}
			for k, v := range tt.extra {
				files[k] = v
			}
			_, err := Load(files)
			var inv *InvalidError
			if !errors.As(err, &inv) || !strings.Contains(inv.Message, tt.message) {
				t.Fatalf("want a refusal containing %q, got %v", tt.message, err)
			}
		})
	}
}

func TestDecodeIsBounded(t *testing.T) {
	bomb := `a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
`
	tests := map[string]struct{ doc, message string }{
		"alias bomb":     {bomb, "alias bomb"},
		"deep nesting":   {strings.Repeat("[", 200) + strings.Repeat("]", 200), "nested deeper"},
		"dense sequence": {"[" + strings.Repeat("1,", 300_000) + "1]", "too many values"},
		"duplicate key":  {"a: 1\na: 2\n", `key "a" appears twice`},
		"infinity":       {"a: .inf\n", "not a number JSON can hold"},
		"not an object":  {"- a\n- b\n", "not an object"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeDocuments([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("want an error containing %q, got %v", tt.message, err)
			}
		})
	}
	docs, err := DecodeDocuments([]byte("base: &b {x: 1, y: two}\nuse:\n  <<: *b\n  y: 3\nn: 12345678901234567890\nt: 2024-01-01\nf: 1.5\nnil: ~\n---\n---\nk: v\n"))
	if err != nil {
		t.Fatal(err)
	}
	use := docs[0]["use"].(map[string]any)
	if len(docs) != 2 || use["x"] != int64(1) || use["y"] != int64(3) || docs[0]["t"] != "2024-01-01" || docs[0]["f"] != 1.5 || docs[0]["nil"] != nil {
		t.Fatalf("decoded %#v", docs)
	}
	if _, ok := docs[0]["n"].(float64); !ok {
		t.Fatalf("an integer beyond int64 must become a float64, got %T", docs[0]["n"])
	}
}
