package cellbranch

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cellsync/cellsync/hub/render"
)

// memFiles is a Files for tests.
type memFiles map[string][]byte

func (m memFiles) List() []string {
	out := make([]string, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
func (m memFiles) Has(p string) bool { _, ok := m[p]; return ok }
func (m memFiles) Read(p string) ([]byte, error) {
	b, ok := m[p]
	if !ok {
		return nil, fmt.Errorf("no %s", p)
	}
	return b, nil
}
func (m memFiles) Write(p string, b []byte) { m[p] = b }
func (m memFiles) Delete(p string)          { delete(m, p) }

func rendered(dir string, files ...string) *render.RenderedApp {
	r := &render.RenderedApp{Dir: dir, Files: map[string][]byte{}, Revision: "rev-1", TargetNamespace: strings.Split(dir, "/")[0]}
	for _, f := range files {
		r.Files[dir+"/"+f] = []byte("kind: X\n")
	}
	return r
}

func kustomizationResources(t *testing.T, f memFiles) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(string(f[KustomizationFile]), "\n") {
		if strings.HasPrefix(line, "- ") {
			out = append(out, strings.TrimPrefix(line, "- "))
		}
	}
	return out
}

func TestPutAndRemoveApps(t *testing.T) {
	f := memFiles{}
	cell := CellMeta{Cell: "eu-1", Cluster: "c1"}
	a := AppKey{Namespace: "team", Name: "a"}
	b := AppKey{Namespace: "team", Name: "b"}
	if err := PutApp(f, cell, a, rendered("apps/a", "service.yaml", "domainmapping-x.yaml"), "abc123"); err != nil {
		t.Fatal(err)
	}
	if err := PutApp(f, cell, b, rendered("apps/b", "service.yaml"), ""); err != nil {
		t.Fatal(err)
	}
	want := []string{"apps/a/domainmapping-x.yaml", "apps/a/service.yaml", "apps/b/service.yaml"}
	if d := cmp.Diff(want, kustomizationResources(t, f)); d != "" {
		t.Fatalf("kustomization (-want +got):\n%s", d)
	}
	meta, err := ReadAppMeta(f, a)
	if err != nil || meta.SourceCommit != "abc123" || meta.Revision != "rev-1" {
		t.Fatalf("app meta = %+v, %v", meta, err)
	}
	if !strings.Contains(string(f[CellMetaFile]), render.Version) {
		t.Fatalf("cell meta has no renderer version: %s", f[CellMetaFile])
	}

	// A new render drops files the app no longer has.
	if err := PutApp(f, cell, a, rendered("apps/a", "service.yaml"), ""); err != nil {
		t.Fatal(err)
	}
	if f.Has("apps/a/domainmapping-x.yaml") {
		t.Fatal("stale file kept")
	}

	// Removing a leaves b exactly as it was.
	bBefore := string(f["apps/b/service.yaml"])
	if err := RemoveApp(f, cell, a); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"apps/b/service.yaml"}, kustomizationResources(t, f)); d != "" {
		t.Fatalf("kustomization after removal (-want +got):\n%s", d)
	}
	if f.Has(AppMetaPath(a)) || string(f["apps/b/service.yaml"]) != bBefore {
		t.Fatal("removal touched the wrong files")
	}
	// Removing an app that is not there changes nothing.
	snapshot := fmt.Sprint(f)
	if err := RemoveApp(f, cell, a); err != nil || fmt.Sprint(f) != snapshot {
		t.Fatalf("second removal changed the tree: %v", err)
	}
}

func TestTwoAppsCannotShareAFolder(t *testing.T) {
	f := memFiles{}
	cell := CellMeta{Cell: "eu-1"}
	if err := PutApp(f, cell, AppKey{Namespace: "team-a", Name: "web"}, rendered("apps/web", "service.yaml"), ""); err != nil {
		t.Fatal(err)
	}
	err := PutApp(f, cell, AppKey{Namespace: "team-b", Name: "web"}, rendered("apps/web", "service.yaml"), "")
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !strings.Contains(conflict.Message, "team-a/web") {
		t.Fatalf("want a conflict naming team-a/web, got %v", err)
	}
}

func TestEmptyBranchStillBuilds(t *testing.T) {
	if got := string(Kustomization(nil)); !strings.Contains(got, "resources: []") {
		t.Fatalf("empty kustomization: %s", got)
	}
}
