package manifests

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const root = "/branch"

// InvalidError is a branch that cannot be applied as it is.
type InvalidError struct {
	Reason  string
	Message string
}

func (e *InvalidError) Error() string { return e.Message }

func invalid(reason, format string, args ...any) error {
	return &InvalidError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Reasons of InvalidError.
const (
	ReasonBuildFailed     = "BuildFailed"
	ReasonPolicyViolation = "PolicyViolation"
)

// Build runs kustomize on the branch root and returns the objects, sorted by kind, namespace and
// name. Every kustomization in the tree may reference only files and folders inside the tree.
func Build(files map[string][]byte) ([]*unstructured.Unstructured, error) {
	if _, ok := files["kustomization.yaml"]; !ok {
		return nil, invalid(ReasonBuildFailed, "the branch has no kustomization.yaml at its root")
	}
	fs := filesys.MakeFsInMemory()
	for p, b := range files {
		clean := path.Clean("/" + p)
		if clean != "/"+p || strings.Contains(p, "..") {
			return nil, invalid(ReasonBuildFailed, "the branch has a file with an unsafe path %q", p)
		}
		if path.Base(p) == "kustomization.yaml" || path.Base(p) == "kustomization.yml" || path.Base(p) == "Kustomization" {
			if err := checkLocal(p, b); err != nil {
				return nil, err
			}
		}
		if err := fs.WriteFile(root+clean, b); err != nil {
			return nil, err
		}
	}
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = kustypes.LoadRestrictionsRootOnly
	m, err := krusty.MakeKustomizer(opts).Run(fs, root)
	if err != nil {
		return nil, invalid(ReasonBuildFailed, "kustomize build of the branch failed: %v", err)
	}
	out := make([]*unstructured.Unstructured, 0, m.Size())
	for _, r := range m.Resources() {
		// Through JSON, so that numbers become int64/float64 as Unstructured expects (kustomize's
		// maps hold plain ints, which Unstructured cannot copy).
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, invalid(ReasonBuildFailed, "the branch has an unreadable object: %v", err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(b); err != nil {
			return nil, invalid(ReasonBuildFailed, "the branch has an unreadable object: %v", err)
		}
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			return nil, invalid(ReasonBuildFailed, "the branch has an object without apiVersion, kind or name")
		}
		out = append(out, u)
	}
	sort.SliceStable(out, func(i, j int) bool { return ID(out[i]) < ID(out[j]) })
	return out, nil
}

// checkLocal refuses kustomizations that reach outside the branch (remote bases, URLs, ../).
func checkLocal(p string, b []byte) error {
	var k kustypes.Kustomization
	if err := yaml.Unmarshal(b, &k); err != nil {
		return invalid(ReasonBuildFailed, "%s is not a valid kustomization: %v", p, err)
	}
	refs := append(append([]string{}, k.Resources...), k.Components...)
	for _, c := range k.Patches {
		refs = append(refs, c.Path)
	}
	for _, r := range refs {
		if r == "" {
			continue
		}
		if strings.Contains(r, "://") || strings.HasPrefix(r, "github.com/") || strings.Contains(r, "?ref=") || strings.HasPrefix(r, "git@") {
			return invalid(ReasonBuildFailed, "%s references %q outside the branch; cell branches may only use their own files", p, r)
		}
		if strings.HasPrefix(r, "/") || strings.HasPrefix(path.Clean(path.Join(path.Dir(p), r)), "..") {
			return invalid(ReasonBuildFailed, "%s references %q outside the branch", p, r)
		}
	}
	if len(k.HelmCharts) > 0 || len(k.Generators) > 0 || len(k.Transformers) > 0 || len(k.Validators) > 0 {
		return invalid(ReasonBuildFailed, "%s uses helm charts or plugins, which cell branches may not", p)
	}
	return nil
}

// ID is the Flux inventory id of an object, <namespace>_<name>_<group>_<kind>, as cli-utils
// writes and parses it (object.ParseObjMetadata).
func ID(u *unstructured.Unstructured) string {
	return object.UnstructuredToObjMetadata(u).String()
}
