package render

import (
	"bytes"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/resid"
	"sigs.k8s.io/yaml"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// applyOverrides runs the cell's overrides through kustomize, exactly as `kustomize build`
// would apply them as patches, and maps the results back to their files.
func applyOverrides(objs []object, overrides []hubv1alpha1.CellOverride, cell string) ([]object, error) {
	var res bytes.Buffer
	for _, o := range objs {
		b, err := encodeYAML(o.obj)
		if err != nil {
			return nil, fmt.Errorf("failed to encode %s: %w", o.file, err)
		}
		res.WriteString("---\n")
		res.Write(b)
	}
	k := kustypes.Kustomization{Resources: []string{"resources.yaml"}}
	k.APIVersion, k.Kind = kustypes.KustomizationVersion, kustypes.KustomizationKind
	for _, ov := range overrides {
		for _, p := range ov.Patches {
			kp := kustypes.Patch{Patch: p.Patch}
			if p.Target == nil {
				t, err := targetFromPatch(p.Patch)
				if err != nil {
					return nil, invalid(hubv1alpha1.ReasonOverrideFailed, "override %q: %v", ov.Name, err)
				}
				kp.Target = t
			} else if t := p.Target; t != nil {
				kp.Target = &kustypes.Selector{
					ResId:              resIDOf(t),
					LabelSelector:      t.LabelSelector,
					AnnotationSelector: t.AnnotationSelector,
				}
			}
			k.Patches = append(k.Patches, kp)
		}
	}
	kb, err := yaml.Marshal(k)
	if err != nil {
		return nil, fmt.Errorf("failed to encode kustomization: %w", err)
	}
	fs := filesys.MakeFsInMemory()
	if err := fs.WriteFile("/app/resources.yaml", res.Bytes()); err != nil {
		return nil, err
	}
	if err := fs.WriteFile("/app/kustomization.yaml", kb); err != nil {
		return nil, err
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/app")
	if err != nil {
		return nil, invalid(hubv1alpha1.ReasonOverrideFailed, "override %s does not apply to cell %q: %v", overrideNames(overrides), cell, err)
	}
	if m.Size() != len(objs) {
		return nil, invalid(hubv1alpha1.ReasonOverrideFailed, "override %s for cell %q changed the number of objects from %d to %d", overrideNames(overrides), cell, len(objs), m.Size())
	}
	out := make([]object, 0, len(objs))
	for i, r := range m.Resources() {
		om, err := r.Map()
		if err != nil {
			return nil, fmt.Errorf("failed to read patched object: %w", err)
		}
		// kustomize keeps resource order (Reorder none), so index i is still objs[i]'s file.
		if r.OrgId().Name != nameOf(objs[i].obj) || r.OrgId().Kind != kindOf(objs[i].obj) {
			return nil, invalid(hubv1alpha1.ReasonOverrideFailed, "override %s for cell %q renames %s %q; overrides may change fields, not identities", overrideNames(overrides), cell, kindOf(objs[i].obj), nameOf(objs[i].obj))
		}
		if nameOf(om) != nameOf(objs[i].obj) || kindOf(om) != kindOf(objs[i].obj) || namespaceOf(om) != namespaceOf(objs[i].obj) {
			return nil, invalid(hubv1alpha1.ReasonOverrideFailed, "override %s for cell %q changes the name, kind or namespace of %s %q; overrides may change fields, not identities", overrideNames(overrides), cell, kindOf(objs[i].obj), nameOf(objs[i].obj))
		}
		out = append(out, object{file: objs[i].file, obj: om})
	}
	for _, o := range out {
		if kindOf(o.obj) == "Service" && o.obj["apiVersion"] == servingv1.SchemeGroupVersion.String() {
			svc := &servingv1.Service{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.obj, svc); err != nil {
				return nil, invalid(hubv1alpha1.ReasonOverrideFailed, "override %s for cell %q makes the Knative Service unreadable: %v", overrideNames(overrides), cell, err)
			}
			if err := validateKnative(svc); err != nil {
				return nil, invalid(hubv1alpha1.ReasonOverrideFailed, "override %s for cell %q: %v", overrideNames(overrides), cell, err)
			}
		}
	}
	return out, nil
}

// targetFromPatch targets a strategic merge patch at the kind and name it names. Patches do not
// name a namespace (the cell decides it), so matching on kind and name is what people mean.
func targetFromPatch(body string) (*kustypes.Selector, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(body), &head); err != nil {
		return nil, fmt.Errorf("a patch without a target must be a strategic merge patch (an object with apiVersion, kind and metadata.name); a JSON 6902 patch needs a target: %v", err)
	}
	if head.Kind == "" || head.Metadata.Name == "" {
		return nil, fmt.Errorf("a strategic merge patch must name its kind and metadata.name, or the patch needs a target")
	}
	gv := strings.SplitN(head.APIVersion, "/", 2)
	sel := &kustypes.Selector{ResId: resid.ResId{Gvk: resid.Gvk{Kind: head.Kind}, Name: head.Metadata.Name}}
	if len(gv) == 2 {
		sel.Group, sel.Version = gv[0], gv[1]
	} else {
		sel.Version = gv[0]
	}
	return sel, nil
}

func resIDOf(t *hubv1alpha1.PatchTarget) resid.ResId {
	return resid.ResId{Gvk: resid.Gvk{Group: t.Group, Version: t.Version, Kind: t.Kind}, Name: t.Name, Namespace: t.Namespace}
}

func overrideNames(overrides []hubv1alpha1.CellOverride) string {
	names := make([]string, 0, len(overrides))
	for _, o := range overrides {
		names = append(names, fmt.Sprintf("%q", o.Name))
	}
	return strings.Join(names, ", ")
}

// finalizeRevision names the Knative revision after its final content, once overrides are in,
// and points the traffic at it.
func finalizeRevision(app string, objs []object) (string, error) {
	for _, o := range objs {
		if kindOf(o.obj) != "Service" || o.obj["apiVersion"] != servingv1.SchemeGroupVersion.String() {
			continue
		}
		tmpl, ok, _ := unstructuredNested(o.obj, "spec", "template")
		if !ok {
			return "", invalid(hubv1alpha1.ReasonOverrideFailed, "the Knative Service of %q lost its template", app)
		}
		old := nameOf(tmpl)
		rev := revisionName(app, tmpl)
		md, ok := tmpl["metadata"].(map[string]any)
		if !ok {
			md = map[string]any{}
			tmpl["metadata"] = md
		}
		md["name"] = rev
		if spec, ok := o.obj["spec"].(map[string]any); ok {
			if traffic, ok := spec["traffic"].([]any); ok {
				for _, t := range traffic {
					if tm, ok := t.(map[string]any); ok && tm["revisionName"] == old {
						tm["revisionName"] = rev
					}
				}
			}
		}
		return rev, nil
	}
	for _, o := range objs {
		if kindOf(o.obj) == "Deployment" {
			ann, _, _ := unstructuredNested(o.obj, "spec", "template", "metadata", "annotations")
			if rev, ok := ann["cellsync.io/revision"].(string); ok {
				return rev, nil
			}
		}
	}
	return "", fmt.Errorf("no workload rendered for %q", app)
}

func unstructuredNested(m map[string]any, fields ...string) (map[string]any, bool, error) {
	cur := m
	for _, f := range fields {
		next, ok := cur[f].(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = next
	}
	return cur, true, nil
}

func nameOf(m map[string]any) string {
	md, _ := m["metadata"].(map[string]any)
	s, _ := md["name"].(string)
	return s
}

func namespaceOf(m map[string]any) string {
	md, _ := m["metadata"].(map[string]any)
	s, _ := md["namespace"].(string)
	return s
}

func kindOf(m map[string]any) string {
	s, _ := m["kind"].(string)
	return s
}
