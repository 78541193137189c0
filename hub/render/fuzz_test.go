package render

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// FuzzRender feeds the renderer names, labels, env, domains, schedules and override patches.
// Whatever comes in, it must not panic, and every file it renders must stay inside the app's
// folder of the cell tree and be valid YAML.
func FuzzRender(f *testing.F) {
	f.Add("hello", "apps", "team", "a", "TARGET", "world", "{app}.example.com", "nightly",
		"apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\nspec:\n  template:\n    metadata:\n      annotations:\n        x: y\n")
	f.Add("../../etc", "..", "a/b", "", "", "", "../../{app}", "../x", `[{"op":"add","path":"/metadata/name","value":"../../x"}]`)
	f.Add("a", "apps", "", "", "A", "", "{cell}.{cluster}", "x", "kind: Service\nmetadata:\n  name: a\n  namespace: ../../..\n")
	f.Add("hello", "apps", "k", "v", "E", "v", "", "", "apiVersion: v1\nkind: Service\nmetadata:\n  name: hello\n")
	f.Fuzz(func(t *testing.T, name, ns, labelKey, labelValue, envName, envValue, domain, schedule, patch string) {
		app := newApp(name, func(a *hubv1alpha1.ServerlessApp) {
			a.Spec.TargetNamespace = ns
			a.Spec.Template.Labels = map[string]string{labelKey: labelValue}
			a.Spec.Template.Env = []corev1.EnvVar{{Name: envName, Value: envValue}}
			if domain != "" {
				a.Spec.Domains = []string{domain}
			}
			if schedule != "" {
				a.Spec.Schedules = []hubv1alpha1.Schedule{{Name: schedule, Schedule: "*/5 * * * *"}}
			}
		})
		cell := newCell("fuzz", func(c *hubv1alpha1.Cell) { c.Spec.Namespaces = []string{ns, "apps"} })
		var overrides []hubv1alpha1.CellOverride
		if patch != "" {
			overrides = []hubv1alpha1.CellOverride{{Name: "fuzz", Patches: []hubv1alpha1.Patch{{Patch: patch}}}}
		}
		_ = ValidateApp(app)
		r, err := Render(Input{App: app, Cell: cell, Overrides: overrides})
		if err != nil {
			return
		}
		if r.Dir != ns+"/"+name || !isLocalPath(r.Dir) {
			t.Fatalf("app folder %q is not %s/%s or leaves the tree", r.Dir, ns, name)
		}
		for p, b := range r.Files {
			if !isLocalPath(p) || !strings.HasPrefix(p, r.Dir+"/") || strings.Count(p, "/") != 2 {
				t.Fatalf("file %q escapes the app folder %q", p, r.Dir)
			}
			var obj map[string]any
			if err := yaml.Unmarshal(b, &obj); err != nil {
				t.Fatalf("file %q is not valid YAML: %v", p, err)
			}
		}
	})
}
