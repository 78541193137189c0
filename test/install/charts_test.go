package install

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/cellsync/cellsync/test/testenv"
)

const exampleURL = "https://git.example.com/platform/gitops.git"

var agentCells = []string{"cells[0].name=cell-1", "cells[0].namespaces={apps}"}

// helm lint is clean for both charts, and every object `helm template` renders passes a
// server-side dry-run against a real apiserver.
func TestChartsLintAndDryRun(t *testing.T) {
	for _, args := range [][]string{
		{"lint", "--strict", "charts/cellsync-hub", "--set", "git.url=" + exampleURL},
		{"lint", "--strict", "charts/cellsync-agent", "--set", "git.url=" + exampleURL, "--set", agentCells[0], "--set", agentCells[1]},
	} {
		out := helm(t, args...)
		if !strings.Contains(string(out), "0 chart(s) failed") {
			t.Errorf("helm %s:\n%s", strings.Join(args, " "), out)
		}
	}
	cl, err := testenv.StartCluster(testenv.ClusterOptions{Knative: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Stop() }()
	c, err := client.New(cl.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hub := render(t, "cellsync-hub", "cellsync-hub", "cellsync-system", "git.url="+exampleURL, "git.credentials.username=u", "git.credentials.password=p")
	agent := render(t, "cellsync-agent", "cellsync-agent", "cellsync-system", append([]string{"git.url=" + exampleURL}, agentCells...)...)
	// The CRDs and the namespaces are installed for real (the dry-run of a custom object needs
	// its CRD served); everything else is only checked.
	var crds, rest []*unstructured.Unstructured
	for _, u := range append(hub, agent...) {
		if u.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, u)
		} else {
			rest = append(rest, u)
		}
	}
	for _, ns := range []string{"cellsync-system", "apps"} {
		crds = append(crds, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}})
	}
	if err := testenv.ApplyManifests(ctx, c, crds, false); err != nil {
		t.Fatal(err)
	}
	c, _ = client.New(cl.Config, client.Options{}) // a fresh REST mapper knows the new kinds
	if err := testenv.ApplyManifests(ctx, c, rest, true); err != nil {
		t.Fatalf("server-side dry-run of the rendered charts: %v", err)
	}
	if len(rest) < 12 {
		t.Fatalf("the charts rendered only %d objects", len(rest))
	}
}

// The charts and config/ (the kustomize install) agree: the same CRDs, the same roles, and the
// same Deployment (args, env, ports, probes, resources, security, volumes) for the same values.
// Version numbers agree with the Makefile's.
func TestChartsAgreeWithConfig(t *testing.T) {
	version := makeVar(t, "VERSION")
	for _, chart := range []string{"cellsync-hub", "cellsync-agent"} {
		b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "charts", chart, "Chart.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var meta struct{ Version, AppVersion string }
		if err := yaml.Unmarshal(b, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.AppVersion != version || "v"+meta.Version != version {
			t.Errorf("%s: version %s appVersion %s, the Makefile builds %s", chart, meta.Version, meta.AppVersion, version)
		}
	}
	for _, pair := range []struct {
		config string
		chart  []*unstructured.Unstructured
	}{
		{"config/default", render(t, "cellsync-hub", "cellsync-hub", "cellsync-system", "git.url="+exampleURL)},
		{"config/agent", render(t, "cellsync-agent", "cellsync-agent", "cellsync-system")},
	} {
		want := kustomizeBuild(t, pair.config)
		for _, w := range want {
			got := find(pair.chart, w.GetKind(), w.GetName())
			if w.GetKind() == "Namespace" {
				continue // helm install --create-namespace makes it
			}
			if got == nil {
				t.Errorf("%s has %s %s; the chart renders none", pair.config, w.GetKind(), w.GetName())
				continue
			}
			if got.GetNamespace() != w.GetNamespace() {
				t.Errorf("%s %s: namespace %q in the chart, %q in %s", w.GetKind(), w.GetName(), got.GetNamespace(), w.GetNamespace(), pair.config)
			}
			switch w.GetKind() {
			case "CustomResourceDefinition":
				if diff := cmp.Diff(w.Object["spec"], got.Object["spec"]); diff != "" {
					t.Errorf("CRD %s differs between %s and the chart (run make manifests):\n%s", w.GetName(), pair.config, diff)
				}
			case "ClusterRole", "Role":
				if diff := cmp.Diff(convert(t, w, &rbacv1.ClusterRole{}).Rules, convert(t, got, &rbacv1.ClusterRole{}).Rules); diff != "" {
					t.Errorf("%s %s: rules differ between %s and the chart (run make manifests):\n%s", w.GetKind(), w.GetName(), pair.config, diff)
				}
			case "ClusterRoleBinding", "RoleBinding":
				wb, gb := convert(t, w, &rbacv1.RoleBinding{}), convert(t, got, &rbacv1.RoleBinding{})
				if !reflect.DeepEqual(wb.RoleRef, gb.RoleRef) || !reflect.DeepEqual(wb.Subjects, gb.Subjects) {
					t.Errorf("%s %s differs between %s and the chart:\n%s", w.GetKind(), w.GetName(), pair.config, cmp.Diff(wb, gb))
				}
			case "Deployment":
				wd, gd := convert(t, w, &appsv1.Deployment{}), convert(t, got, &appsv1.Deployment{})
				ws, gs := wd.Spec.Template.Spec, gd.Spec.Template.Spec
				if diff := cmp.Diff(podShape(ws), podShape(gs)); diff != "" {
					t.Errorf("Deployment %s differs between %s and the chart:\n%s", w.GetName(), pair.config, diff)
				}
			}
		}
	}
}

// podShape is what must agree between the two installs: everything but labels.
func podShape(p corev1.PodSpec) corev1.PodSpec {
	return corev1.PodSpec{
		ServiceAccountName: p.ServiceAccountName, SecurityContext: p.SecurityContext,
		Containers: p.Containers, Volumes: p.Volumes,
	}
}

// The agent install that `kubectl cells join` embeds is config/agent as it is now.
func TestJoinEmbedsTheShippedAgent(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "hub", "cmd", "kubectl-cells", "agent-install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := testenv.DecodeManifests(b)
	if err != nil {
		t.Fatal(err)
	}
	want := kustomizeBuild(t, "config/agent")
	if diff := cmp.Diff(want, embedded); diff != "" {
		t.Errorf("hub/cmd/kubectl-cells/agent-install.yaml is not config/agent (run make manifests):\n%s", diff)
	}
}
