package cellbranch

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	"github.com/cellsync/cellsync/hub/render"
)

// Paths in every cell branch.
const (
	KustomizationFile = "kustomization.yaml"
	MetaDir           = ".cellsync"
	CellMetaFile      = MetaDir + "/cell.yaml"
	appMetaDir        = MetaDir + "/apps"
)

// Files is a mutable view of a branch's tree.
type Files interface {
	// List returns every path in the tree, sorted.
	List() []string
	// Has reports whether a path exists.
	Has(path string) bool
	// Read returns a file's content.
	Read(path string) ([]byte, error)
	// Write sets a file's content.
	Write(path string, content []byte)
	// Delete removes a file; deleting a missing file is no error.
	Delete(path string)
}

// AppKey names a hub app: its namespace and name on the hub.
type AppKey struct {
	Namespace string
	Name      string
}

func (k AppKey) String() string { return k.Namespace + "/" + k.Name }

// AppMeta is what a branch records about one app.
type AppMeta struct {
	App             string   `json:"app"`
	Namespace       string   `json:"namespace"`
	TargetNamespace string   `json:"targetNamespace"`
	Revision        string   `json:"revision"`
	SourceCommit    string   `json:"sourceCommit,omitempty"`
	Files           []string `json:"files"`
}

// CellMeta is what a branch records about itself.
type CellMeta struct {
	Cell            string `json:"cell"`
	Cluster         string `json:"cluster"`
	RendererVersion string `json:"rendererVersion"`
}

// AppMetaPath is where the branch records an app.
func AppMetaPath(k AppKey) string { return appMetaDir + "/" + k.Namespace + "." + k.Name + ".yaml" }

// ConflictError says two hub apps want the same folder in a cell.
type ConflictError struct{ Message string }

func (e *ConflictError) Error() string { return e.Message }

// ReadAppMeta returns the app's record in the branch, or nil when the app is not there.
func ReadAppMeta(files Files, k AppKey) (*AppMeta, error) {
	p := AppMetaPath(k)
	if !files.Has(p) {
		return nil, nil
	}
	return readAppMetaAt(files, p)
}

// PutApp writes an app's rendered files into the branch, replacing whatever it had there. What
// it records is derived from Git and the app's spec only (no hub object's generation or UID),
// so a hub rebuilt on an empty etcd renders the very same trees.
func PutApp(files Files, cell CellMeta, k AppKey, r *render.RenderedApp, sourceCommit string) error {
	mine, err := ReadAppMeta(files, k)
	if err != nil {
		return err
	}
	if owner, err := folderOwner(files, r.Dir, k, mine); err != nil {
		return err
	} else if owner != "" {
		return &ConflictError{Message: fmt.Sprintf("cell %q already runs app %s in folder %s; app %s cannot use it too", cell.Cell, owner, r.Dir, k)}
	}
	removeAppFiles(files, k, mine)
	for p, b := range r.Files {
		files.Write(p, b)
	}
	meta := AppMeta{
		App: k.Name, Namespace: k.Namespace, TargetNamespace: r.TargetNamespace,
		Revision: r.Revision, SourceCommit: sourceCommit, Files: r.Paths(),
	}
	b, err := encodeAppMeta(&meta)
	if err != nil {
		return err
	}
	files.Write(AppMetaPath(k), b)
	return reindex(files, cell)
}

// RemoveApp deletes an app's files from the branch; a branch without the app is left as it is.
func RemoveApp(files Files, cell CellMeta, k AppKey) error {
	mine, err := ReadAppMeta(files, k)
	if err != nil || mine == nil {
		return err
	}
	removeAppFiles(files, k, mine)
	return reindex(files, cell)
}

// removeAppFiles deletes the files of the app's record mine (nil when the branch has none).
func removeAppFiles(files Files, k AppKey, mine *AppMeta) {
	if mine == nil {
		return
	}
	for _, p := range mine.Files {
		files.Delete(p)
	}
	files.Delete(AppMetaPath(k))
	RemoveAnalysis(files, k)
}

// folderOwner names another app that already renders into dir, if any; mine is the app's own
// record in the branch (nil when it has none).
func folderOwner(files Files, dir string, self AppKey, mine *AppMeta) (string, error) {
	prefix := dir + "/"
	taken := false
	for _, p := range files.List() {
		if strings.HasPrefix(p, prefix) {
			taken = true
			break
		}
	}
	if !taken {
		return "", nil
	}
	// Folders are exclusive (this check keeps them so): when the app's own record lists files in
	// the folder, nobody else owns it, and the other apps' records need not be read.
	if mine != nil {
		for _, f := range mine.Files {
			if strings.HasPrefix(f, prefix) {
				return "", nil
			}
		}
	}
	for _, p := range files.List() {
		if !strings.HasPrefix(p, appMetaDir+"/") {
			continue
		}
		m, err := readAppMetaAt(files, p)
		if err != nil {
			return "", err
		}
		other := AppKey{Namespace: m.Namespace, Name: m.App}
		if other == self {
			continue
		}
		for _, f := range m.Files {
			if strings.HasPrefix(f, prefix) {
				return other.String(), nil
			}
		}
	}
	return "", nil
}

// reindex rewrites the root kustomization.yaml to list every rendered file, and the cell record.
func reindex(files Files, cell CellMeta) error {
	var resources []string
	for _, p := range files.List() {
		if p == KustomizationFile || strings.HasPrefix(p, MetaDir+"/") || path.Ext(p) != ".yaml" {
			continue
		}
		resources = append(resources, p)
	}
	sort.Strings(resources)
	files.Write(KustomizationFile, Kustomization(resources))
	cell.RendererVersion = render.Version
	b, err := encodeCellMeta(cell)
	if err != nil {
		return err
	}
	files.Write(CellMetaFile, b)
	return nil
}

// Kustomization is the root kustomization.yaml for the given resources.
func Kustomization(resources []string) []byte {
	var b strings.Builder
	b.WriteString("# Rendered by the cellsync hub; do not edit. Build with: kustomize build .\n")
	b.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n")
	if len(resources) == 0 {
		b.WriteString("resources: []\n")
		return []byte(b.String())
	}
	b.WriteString("resources:\n")
	for _, r := range resources {
		b.WriteString("- " + r + "\n")
	}
	return []byte(b.String())
}

// PutAnalysis writes the analysis the cell measures for the app's current canary step. It lives
// under .cellsync/, so the root kustomization never lists it and nothing applies it.
func PutAnalysis(files Files, k AppKey, a *agentv1alpha1.Analysis) error {
	b, err := yaml.Marshal(a)
	if err != nil {
		return err
	}
	files.Write(agentv1alpha1.AnalysisPath(k.Namespace, k.Name), b)
	return nil
}

// RemoveAnalysis deletes the app's analysis from the branch, if it has one.
func RemoveAnalysis(files Files, k AppKey) {
	if p := agentv1alpha1.AnalysisPath(k.Namespace, k.Name); files.Has(p) {
		files.Delete(p)
	}
}
