package cellbranch

import (
	"fmt"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/cellsync/cellsync/hub/render"
)

// trickyValues are strings where a plain YAML scalar would be read back as something else, or
// needs quoting or escaping, next to names the shortcut writes itself.
var trickyValues = []string{
	"eu-1", "team", "web-00001", "apps/team.web/service.yaml", render.Version, "a_b", "x.y.z",
	"deadbeefcafe", "n0", "on1", "yes-no", "nulls", "z",
	"", "y", "Y", "yes", "no", "n", "N", "on", "off", "true", "false", "True", "null", "Null", "~",
	"123", "1e3", "0x1f", "1_000", "12:30", ".inf", ".nan", "-1", "+1", "0o17", "0b101",
	"a b", "a: b", "a #b", "a,b", "[a]", "{a}", "a'b", "a\"b", "a\tb", "a\nb", "-", "- a",
	"Eu-1", "é", "a\u00a0b", "<<", "=", "!tag", "&anchor", "*alias", "%d", "@a", "`a",
	strings.Repeat("long-name-", 20), strings.Repeat("long name ", 20),
}

func TestMetaEncodingMatchesSigsYAML(t *testing.T) {
	shortcuts := 0
	for _, v := range trickyValues {
		for _, w := range []string{"eu-1", v} {
			cell := CellMeta{Cell: v, Cluster: w, RendererVersion: render.Version}
			if plainName(v) && plainName(w) {
				shortcuts++
			}
			compareCellMeta(t, cell)
			for _, files := range [][]string{nil, {}, {"apps/team.web/service.yaml"}, {"a.yaml", v, w}} {
				for _, commit := range []string{"", v} {
					compareAppMeta(t, &AppMeta{App: v, Namespace: w, TargetNamespace: "team", Revision: w, SourceCommit: commit, Files: files})
				}
			}
		}
	}
	if shortcuts == 0 {
		t.Fatal("no value took the shortcut; the test compares nothing")
	}
}

func FuzzMetaEncoding(f *testing.F) {
	for _, v := range trickyValues {
		f.Add(v, "eu-1", "apps/x.yaml")
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		compareCellMeta(t, CellMeta{Cell: a, Cluster: b, RendererVersion: c})
		compareAppMeta(t, &AppMeta{App: a, Namespace: b, TargetNamespace: c, Revision: a + b, SourceCommit: c, Files: []string{a, b, c}})
	})
}

func compareCellMeta(t *testing.T, m CellMeta) {
	t.Helper()
	want, wantErr := yaml.Marshal(m)
	got, err := encodeCellMeta(m)
	if (err != nil) != (wantErr != nil) || string(got) != string(want) {
		t.Fatalf("cell record %#v:\nshortcut %q (%v)\nsigs.k8s.io/yaml %q (%v)", m, got, err, want, wantErr)
	}
	// What the shortcut writes reads back as the values it was given.
	if plainName(m.Cell) && plainName(m.Cluster) && plainName(m.RendererVersion) {
		var back CellMeta
		if err := yaml.Unmarshal(got, &back); err != nil || back != m {
			t.Fatalf("cell record %#v read back as %#v (%v)", m, back, err)
		}
	}
}

func compareAppMeta(t *testing.T, m *AppMeta) {
	t.Helper()
	want, wantErr := yaml.Marshal(m)
	got, err := encodeAppMeta(m)
	if (err != nil) != (wantErr != nil) || string(got) != string(want) {
		t.Fatalf("app record %#v:\nshortcut %q (%v)\nsigs.k8s.io/yaml %q (%v)", m, got, err, want, wantErr)
	}
}

func TestParsedAppMetaIsTheCallers(t *testing.T) {
	b, err := encodeAppMeta(&AppMeta{App: "web", Namespace: "team", TargetNamespace: "team", Revision: "web-1", Files: []string{"team/web/a.yaml"}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := ParseAppMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	first.Revision, first.Files[0] = "changed", "changed"
	second, err := ParseAppMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if second.Revision != "web-1" || second.Files[0] != "team/web/a.yaml" {
		t.Fatalf("a caller's change to its record reached the next reader: %#v", second)
	}
}

func TestBrokenAppMetaIsAnError(t *testing.T) {
	f := memFiles{AppMetaPath(AppKey{Namespace: "team", Name: "web"}): []byte("app: [unclosed\n")}
	_, err := ReadAppMeta(f, AppKey{Namespace: "team", Name: "web"})
	if err == nil || !strings.Contains(err.Error(), ".cellsync/apps/team.web.yaml") {
		t.Fatalf("want an error naming the record, got %v", err)
	}
	// Not remembered as good: the second read fails the same way.
	if _, err := ReadAppMeta(f, AppKey{Namespace: "team", Name: "web"}); err == nil {
		t.Fatal("the second read of a broken record passed")
	}
	// Nor can a broken record stop PutApp from reporting it.
	if err := PutApp(f, CellMeta{Cell: "eu-1"}, AppKey{Namespace: "team", Name: "web"}, rendered("team/web", "service.yaml"), ""); err == nil {
		t.Fatal("PutApp wrote over a record it could not read")
	}
}

// Records are remembered only up to 16 KiB each, 256 of them: a branch someone filled with large
// records costs the hub no more than 4 MiB of them, and each is still read right.
func TestRememberedAppMetasStayBounded(t *testing.T) {
	for i := range appMetasMax + 10 {
		files := []string{fmt.Sprintf("a/%d.yaml", i), strings.Repeat("x", 20<<10)}
		b, err := encodeAppMeta(&AppMeta{App: "web", Namespace: "team", TargetNamespace: "team", Revision: fmt.Sprintf("web-%d", i), Files: files})
		if err != nil {
			t.Fatal(err)
		}
		m, err := ParseAppMeta(b)
		if err != nil || m.Revision != fmt.Sprintf("web-%d", i) || len(m.Files) != 2 {
			t.Fatalf("record %d read as %+v (%v)", i, m, err)
		}
	}
	appMetas.Lock()
	defer appMetas.Unlock()
	held := 0
	for k := range appMetas.m {
		held += len(k)
	}
	if len(appMetas.m) > appMetasMax || held > appMetasMax*appMetaRemembered {
		t.Fatalf("%d records of %d bytes remembered; want at most %d records of at most %d bytes", len(appMetas.m), held, appMetasMax, appMetaRemembered)
	}
	for k := range appMetas.m {
		if len(k) > appMetaRemembered {
			t.Fatalf("a record of %d bytes was remembered", len(k))
		}
	}
}
