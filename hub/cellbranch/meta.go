package cellbranch

import (
	"fmt"
	"slices"
	"sync"

	"sigs.k8s.io/yaml"
)

// The records under .cellsync/ are written once per cell branch per write, so a step of a
// rollout over 10,000 cells encodes 20,000 of them and reads 10,000: through sigs.k8s.io/yaml
// (JSON, then a YAML parse and emit) that was a third of everything the hub allocated. Both
// directions take a shortcut that yields the very same bytes and values:
//   - A record whose every value is a plain name (see plainName) is written directly, in the
//     order and form sigs.k8s.io/yaml writes it; any other record goes through sigs.k8s.io/yaml.
//     TestMetaEncodingMatchesSigsYAML and FuzzMetaEncoding compare the two.
//   - Parsed app records are remembered by their bytes (the cells of an app mostly hold the very
//     same record), a bounded number of them.

// encodeAppMeta is yaml.Marshal(m).
func encodeAppMeta(m *AppMeta) ([]byte, error) {
	fast := plainName(m.App) && plainName(m.Namespace) && plainName(m.Revision) &&
		plainName(m.TargetNamespace) && (m.SourceCommit == "" || plainName(m.SourceCommit)) && m.Files != nil
	for _, f := range m.Files {
		fast = fast && plainName(f)
	}
	if !fast {
		return yaml.Marshal(m)
	}
	// sigs.k8s.io/yaml writes the keys sorted.
	n := 64 + len(m.App) + len(m.Namespace) + len(m.Revision) + len(m.SourceCommit) + len(m.TargetNamespace)
	for _, f := range m.Files {
		n += len(f) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, "app: "...)
	b = append(b, m.App...)
	b = append(b, "\nfiles:"...)
	if len(m.Files) == 0 {
		b = append(b, " []"...)
	}
	for _, f := range m.Files {
		b = append(b, "\n- "...)
		b = append(b, f...)
	}
	b = append(b, "\nnamespace: "...)
	b = append(b, m.Namespace...)
	b = append(b, "\nrevision: "...)
	b = append(b, m.Revision...)
	if m.SourceCommit != "" {
		b = append(b, "\nsourceCommit: "...)
		b = append(b, m.SourceCommit...)
	}
	b = append(b, "\ntargetNamespace: "...)
	b = append(b, m.TargetNamespace...)
	return append(b, '\n'), nil
}

// encodeCellMeta is yaml.Marshal(m).
func encodeCellMeta(m CellMeta) ([]byte, error) {
	if !plainName(m.Cell) || !plainName(m.Cluster) || !plainName(m.RendererVersion) {
		return yaml.Marshal(m)
	}
	b := make([]byte, 0, 48+len(m.Cell)+len(m.Cluster)+len(m.RendererVersion))
	b = append(b, "cell: "...)
	b = append(b, m.Cell...)
	b = append(b, "\ncluster: "...)
	b = append(b, m.Cluster...)
	b = append(b, "\nrendererVersion: "...)
	b = append(b, m.RendererVersion...)
	return append(b, '\n'), nil
}

// plainName reports whether the YAML encoder writes s as it is: a lowercase letter, then
// lowercase letters, digits and - . / _ (the characters of Kubernetes names, revisions, commit
// hashes and the branch's paths), and not one of the words YAML 1.1 reads as a boolean or null.
// Such a scalar has no character the emitter escapes or quotes and no space to fold at, and the
// encoder's resolver only looks past a leading letter for those words.
func plainName(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '/' || c == '_') {
			return false
		}
	}
	switch s {
	case "y", "yes", "n", "no", "on", "off", "true", "false", "null":
		return false
	}
	return true
}

// appMetas remembers parsed app records by their bytes.
var appMetas = struct {
	sync.Mutex
	m map[string]*AppMeta
}{m: map[string]*AppMeta{}}

// appMetasMax bounds appMetas: a few apps' records at a few revisions each. Only records of up
// to appMetaRemembered bytes are remembered (the hub writes a few hundred; a larger one, which
// someone else pushed, is parsed every time), so the memory stays under 4 MiB.
const (
	appMetasMax       = 256
	appMetaRemembered = 16 << 10
)

// ParseAppMeta reads an app's record. The result is the caller's own.
func ParseAppMeta(b []byte) (*AppMeta, error) {
	appMetas.Lock()
	m, ok := appMetas.m[string(b)]
	appMetas.Unlock()
	if !ok {
		m = &AppMeta{}
		if err := yaml.Unmarshal(b, m); err != nil {
			return nil, err
		}
		if len(b) > appMetaRemembered {
			return m, nil
		}
		appMetas.Lock()
		if len(appMetas.m) >= appMetasMax {
			clear(appMetas.m)
		}
		appMetas.m[string(b)] = m
		appMetas.Unlock()
	}
	out := *m
	out.Files = slices.Clone(m.Files)
	return &out, nil
}

// readAppMetaAt reads the record at path p.
func readAppMetaAt(files Files, p string) (*AppMeta, error) {
	b, err := files.Read(p)
	if err != nil {
		return nil, err
	}
	m, err := ParseAppMeta(b)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", p, err)
	}
	return m, nil
}
