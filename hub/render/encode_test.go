package render

import (
	"bytes"
	"math"
	"testing"

	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// sameAsJSONRoundTrip fails unless encodeYAML writes obj byte for byte as sigs.k8s.io/yaml does:
// the cell branches the hub wrote with it must not change.
func sameAsJSONRoundTrip(t *testing.T, what string, obj map[string]any) {
	t.Helper()
	want, wantErr := sigsyaml.Marshal(obj)
	got, err := encodeYAML(obj)
	if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
		t.Fatalf("%s: encodeYAML wrote\n%s(err %v)\nsigs.k8s.io/yaml writes\n%s(err %v)", what, got, err, want, wantErr)
	}
}

// Every object a render produces (Knative and Kubernetes cells, with the values a kustomize
// override brings back as floats) and values picked for where JSON and YAML part ways encode
// as the JSON round trip encodes them.
func TestEncodeYAMLMatchesTheJSONRoundTrip(t *testing.T) {
	app := newApp("hello", func(a *hubv1alpha1.ServerlessApp) {
		a.Spec.Template.Env = []corev1.EnvVar{{Name: "LISTEN", Value: "8080"}, {Name: "ON", Value: "yes"}, {Name: "HTML", Value: "<a & b>"}}
		a.Spec.Template.Labels = map[string]string{"a10": "x", "a2": "y", "B": "z"}
		a.Spec.Domains = []string{"{app}.example.com"}
		a.Spec.Schedules = []hubv1alpha1.Schedule{{Name: "nightly", Schedule: "0 3 * * *"}}
	})
	patch := "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\nspec:\n  template:\n    spec:\n" +
		"      containerConcurrency: 100\n      timeoutSeconds: 300\n"
	for _, runtime := range []hubv1alpha1.CellRuntime{hubv1alpha1.RuntimeKnative, hubv1alpha1.RuntimeKubernetes} {
		cell := newCell("eu-1", func(c *hubv1alpha1.Cell) { c.Spec.Runtime = runtime })
		var objs []object
		var err error
		if runtime == hubv1alpha1.RuntimeKubernetes {
			objs, err = kubernetesObjects(app, cell, "apps")
		} else {
			objs, err = knativeObjects(app, cell, "apps")
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			sameAsJSONRoundTrip(t, string(runtime)+" "+o.file, o.obj)
		}
		if runtime == hubv1alpha1.RuntimeKnative {
			patched, err := applyOverrides(objs, []hubv1alpha1.CellOverride{{Name: "big", Patches: []hubv1alpha1.Patch{{Patch: patch}}}}, cell.Name)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range patched {
				sameAsJSONRoundTrip(t, "overridden "+o.file, o.obj)
			}
		}
	}
	sameAsJSONRoundTrip(t, "values", map[string]any{
		"floats":  []any{1e6, 8080.0, 1.5, 1e21, 1e20, math.Copysign(0, -1), 9.3e18, 2e19, -9.3e18, 0.000001, 123456789.5},
		"ints":    []any{int64(math.MaxInt64), int64(math.MinInt64), int64(0), 42},
		"strings": []any{"yes", "123", "1e3", "~", "null", "a\xffb", "\xff\xfe", "<&>", "a\nb\n", " lead", "tail ", "", "é"},
		"\xffkey": "bad key", "a10": 1, "a2": 2, "B": true, "_": nil,
		"empty": []any{}, "nested": map[string]any{"list": []any{map[string]any{"x": 1.0}}},
	})
}

// Fuzzed values encode as the JSON round trip encodes them.
func FuzzEncodeYAML(f *testing.F) {
	f.Add("key", "value", 1e6, int64(7))
	f.Add("a\xff", "\xfe\xff", 0.1, int64(-1))
	f.Add("1", "true", 9.3e18, int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, key, s string, fl float64, n int64) {
		if math.IsNaN(fl) || math.IsInf(fl, 0) {
			return // neither JSON nor a render has them
		}
		sameAsJSONRoundTrip(t, "fuzz", map[string]any{key: s, "f": fl, "n": n, "l": []any{s, fl, map[string]any{key: fl, s: n}}})
	})
}
