package placement

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/render"
)

func cell(name, cluster string, labels ...string) hubv1alpha1.Cell {
	l := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		l[labels[i]] = labels[i+1]
	}
	return hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}, Spec: hubv1alpha1.CellSpec{Cluster: cluster, Namespaces: []string{"apps"}}}
}

func sel(k, v string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
}

func TestResolve(t *testing.T) {
	cells := []hubv1alpha1.Cell{
		cell("eu-1a", "c1", hubv1alpha1.LabelRegion, "eu", hubv1alpha1.LabelEnv, "prod"),
		cell("eu-1b", "c1", hubv1alpha1.LabelRegion, "eu", hubv1alpha1.LabelEnv, "test"),
		cell("eu-2a", "c2", hubv1alpha1.LabelRegion, "eu", hubv1alpha1.LabelEnv, "prod"),
		cell("us-1a", "c3", hubv1alpha1.LabelRegion, "us"),
		cell("red-1", "c4", hubv1alpha1.LabelRegion, "eu", hubv1alpha1.LabelTenant, "red"),
	}
	tests := []struct {
		name    string
		spec    hubv1alpha1.CellPlacementSpec
		tenant  string
		want    []string
		missing []string
		reason  string
	}{
		{name: "selector", spec: hubv1alpha1.CellPlacementSpec{CellSelector: sel(hubv1alpha1.LabelEnv, "prod")}, want: []string{"eu-1a", "eu-2a"}},
		{name: "explicit list", spec: hubv1alpha1.CellPlacementSpec{Cells: []string{"us-1a", "eu-1b", "gone"}}, want: []string{"eu-1b", "us-1a"}, missing: []string{"gone"}},
		{name: "union of selector and list", spec: hubv1alpha1.CellPlacementSpec{CellSelector: sel(hubv1alpha1.LabelRegion, "us"), Cells: []string{"eu-2a"}}, want: []string{"eu-2a", "us-1a"}},
		{name: "topology Cluster takes every cell of the picked clusters", spec: hubv1alpha1.CellPlacementSpec{Cells: []string{"eu-1a"}, Topology: hubv1alpha1.TopologyCluster}, want: []string{"eu-1a", "eu-1b"}},
		{name: "tenant only sees its cells", spec: hubv1alpha1.CellPlacementSpec{Cells: []string{"red-1"}}, tenant: "red", want: []string{"red-1"}},
		{name: "selector reaching another tenant is refused", spec: hubv1alpha1.CellPlacementSpec{CellSelector: sel(hubv1alpha1.LabelRegion, "eu")}, reason: hubv1alpha1.ReasonTenantViolation},
		{name: "tenant placement reaching untenanted cells is refused", spec: hubv1alpha1.CellPlacementSpec{Cells: []string{"eu-1a"}}, tenant: "red", reason: hubv1alpha1.ReasonTenantViolation},
		{name: "invalid selector", spec: hubv1alpha1.CellPlacementSpec{CellSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Nope"}}}}, reason: hubv1alpha1.ReasonPlacementFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &hubv1alpha1.CellPlacement{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "p"}, Spec: tt.spec}
			res, err := Resolve(p, cells, tt.tenant)
			if tt.reason != "" {
				var inv *render.InvalidError
				if !errors.As(err, &inv) || inv.Reason != tt.reason {
					t.Fatalf("want %s error, got %v", tt.reason, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, res.Names()); d != "" {
				t.Errorf("cells (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.missing, res.Missing); d != "" {
				t.Errorf("missing (-want +got):\n%s", d)
			}
		})
	}
}

func TestOverridesFor(t *testing.T) {
	prod := cell("eu-1a", "c1", hubv1alpha1.LabelEnv, "prod")
	test := cell("eu-1b", "c1", hubv1alpha1.LabelEnv, "test")
	p := &hubv1alpha1.CellPlacement{Spec: hubv1alpha1.CellPlacementSpec{Overrides: []hubv1alpha1.CellOverride{
		{Name: "all"},
		{Name: "prod", CellSelector: sel(hubv1alpha1.LabelEnv, "prod")},
		{Name: "by-name", Cells: []string{"eu-1b"}},
	}}}
	names := func(c hubv1alpha1.Cell) []string {
		o, err := OverridesFor(p, &c)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, x := range o {
			out = append(out, x.Name)
		}
		return out
	}
	if d := cmp.Diff([]string{"all", "prod"}, names(prod)); d != "" {
		t.Error(d)
	}
	if d := cmp.Diff([]string{"all", "by-name"}, names(test)); d != "" {
		t.Error(d)
	}
}

func BenchmarkResolve1000Cells(b *testing.B) {
	cells := make([]hubv1alpha1.Cell, 1000)
	for i := range cells {
		cells[i] = cell(fmt.Sprintf("cell-%04d", i), fmt.Sprintf("c%d", i/4), hubv1alpha1.LabelRegion, "eu")
	}
	p := &hubv1alpha1.CellPlacement{Spec: hubv1alpha1.CellPlacementSpec{CellSelector: sel(hubv1alpha1.LabelRegion, "eu")}}
	for b.Loop() {
		if _, err := Resolve(p, cells, ""); err != nil {
			b.Fatal(err)
		}
	}
}
