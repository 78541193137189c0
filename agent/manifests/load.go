package manifests

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
)

// Branch limits: what one commit may hold before anything of it is decoded.
const (
	// MaxFiles bounds the entries of a commit's tree.
	MaxFiles = 10_000
	// MaxFileBytes bounds one file (and every Git object the agent fetches).
	MaxFileBytes = 4 << 20
	// MaxBranchBytes bounds the files the root kustomization lists, together.
	MaxBranchBytes = 16 << 20
	// MaxBranchNodes bounds the values a whole branch decodes to.
	MaxBranchNodes = 500_000
)

// RootFile is the one kustomization the agent reads: the branch root's.
const RootFile = "kustomization.yaml"

// InvalidError is a branch that cannot be applied as it is.
type InvalidError struct {
	Reason  string
	Message string
}

func (e *InvalidError) Error() string { return e.Message }

func invalid(reason, format string, args ...any) error {
	return &InvalidError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Reasons of InvalidError: the CellSync's condition reasons.
const (
	ReasonInvalidBranch   = agentv1alpha1.ReasonInvalidBranch
	ReasonLimitExceeded   = agentv1alpha1.ReasonLimitExceeded
	ReasonPolicyViolation = agentv1alpha1.ReasonPolicyViolation
)

// EntryKind is what a path of the tree is.
type EntryKind int

// Kinds of tree entries.
const (
	RegularFile EntryKind = iota
	Directory
	Symlink
	Submodule
)

func (k EntryKind) String() string {
	return [...]string{"a file", "a directory", "a symlink", "a submodule"}[k]
}

// Tree is a commit's tree as the agent sees it before reading any content: kinds and sizes come
// from the tree and object headers, contents are read on demand.
type Tree interface {
	// Entry says what is at path, and its size in bytes for files.
	Entry(path string) (kind EntryKind, size int64, ok bool)
	// Read returns a file's content.
	Read(path string) ([]byte, error)
}

// Load reads the branch root's kustomization.yaml, which must be a plain list of the branch's
// own files (what the hub writes), and decodes exactly those files. Nothing is built or
// fetched: the objects are the bytes in Git, so the commit signature covers what is applied.
func Load(tree Tree) ([]*unstructured.Unstructured, error) {
	resources, err := readKustomization(tree)
	if err != nil {
		return nil, err
	}
	b := &budget{left: MaxBranchNodes}
	total := int64(0)
	seen := map[string]string{}
	var out []*unstructured.Unstructured
	for _, p := range resources {
		kind, size, ok := tree.Entry(p)
		switch {
		case !ok:
			return nil, invalid(ReasonInvalidBranch, "%s lists %q, which the branch does not have", RootFile, p)
		case kind != RegularFile:
			return nil, invalid(ReasonInvalidBranch, "%s lists %q, which is %s; cell branches list plain files only", RootFile, p, kind)
		case path.Ext(p) != ".yaml" && path.Ext(p) != ".yml" && path.Ext(p) != ".json":
			return nil, invalid(ReasonInvalidBranch, "%s lists %q; the agent reads .yaml, .yml and .json files only", RootFile, p)
		case size > MaxFileBytes:
			return nil, invalid(ReasonLimitExceeded, "file %s is %d bytes; the agent accepts at most %d per file", p, size, MaxFileBytes)
		}
		if total += size; total > MaxBranchBytes {
			return nil, invalid(ReasonLimitExceeded, "the files %s lists hold more than %d bytes", RootFile, MaxBranchBytes)
		}
		data, err := tree.Read(p)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", p, err)
		}
		docs, err := decodeDocuments(data, b)
		if err != nil {
			return nil, invalid(ReasonInvalidBranch, "%s: %v", p, err)
		}
		for _, d := range docs {
			u, err := toObject(d)
			if err != nil {
				return nil, invalid(ReasonInvalidBranch, "%s: %v", p, err)
			}
			id := ID(u)
			if prev, dup := seen[id]; dup {
				return nil, invalid(ReasonInvalidBranch, "%s %s is in both %s and %s", u.GetKind(), name(u), prev, p)
			}
			seen[id] = p
			out = append(out, u)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return ID(out[i]) < ID(out[j]) })
	return out, nil
}

// readKustomization returns the resources of the root kustomization.yaml and refuses every
// other field, and every path that is not one of the branch's own files.
func readKustomization(tree Tree) ([]string, error) {
	kind, size, ok := tree.Entry(RootFile)
	switch {
	case !ok:
		return nil, invalid(ReasonInvalidBranch, "the branch has no %s at its root", RootFile)
	case kind != RegularFile:
		return nil, invalid(ReasonInvalidBranch, "%s is %s, not a file", RootFile, kind)
	case size > MaxFileBytes:
		return nil, invalid(ReasonLimitExceeded, "%s is %d bytes; at most %d", RootFile, size, MaxFileBytes)
	}
	data, err := tree.Read(RootFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", RootFile, err)
	}
	docs, err := DecodeDocuments(data)
	if err != nil {
		return nil, invalid(ReasonInvalidBranch, "%s: %v", RootFile, err)
	}
	if len(docs) != 1 {
		return nil, invalid(ReasonInvalidBranch, "%s must hold exactly one document", RootFile)
	}
	k := docs[0]
	var fields []string
	for f := range k {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	for _, f := range fields {
		switch f {
		case "apiVersion", "kind", "resources":
		default:
			return nil, invalid(ReasonInvalidBranch, "%s uses %q; the agent applies only a plain list of the branch's own files (resources:), nothing is built at the edge", RootFile, f)
		}
	}
	if v, ok := k["apiVersion"]; ok && v != "kustomize.config.k8s.io/v1beta1" {
		return nil, invalid(ReasonInvalidBranch, "%s has apiVersion %v; want kustomize.config.k8s.io/v1beta1", RootFile, v)
	}
	if v, ok := k["kind"]; ok && v != "Kustomization" {
		return nil, invalid(ReasonInvalidBranch, "%s has kind %v; want Kustomization", RootFile, v)
	}
	list, ok := k["resources"].([]any)
	if !ok && k["resources"] != nil {
		return nil, invalid(ReasonInvalidBranch, "%s: resources must be a list of file paths", RootFile)
	}
	if len(list) > MaxFiles {
		return nil, invalid(ReasonLimitExceeded, "%s lists %d files; at most %d", RootFile, len(list), MaxFiles)
	}
	out := make([]string, 0, len(list))
	listed := map[string]bool{}
	for _, item := range list {
		p, ok := item.(string)
		if !ok {
			return nil, invalid(ReasonInvalidBranch, "%s: resources must be a list of file paths, found %v", RootFile, item)
		}
		if err := checkPath(p); err != nil {
			return nil, err
		}
		if listed[p] {
			return nil, invalid(ReasonInvalidBranch, "%s lists %q twice", RootFile, p)
		}
		listed[p] = true
		out = append(out, p)
	}
	return out, nil
}

// checkPath refuses remote, absolute and unclean paths.
func checkPath(p string) error {
	switch {
	case p == "":
		return invalid(ReasonInvalidBranch, "%s lists an empty path", RootFile)
	case strings.Contains(p, "://") || strings.HasPrefix(p, "git@") || strings.Contains(p, "?ref="):
		return invalid(ReasonInvalidBranch, "%s lists %q, a remote location; cell branches may only use their own files, the agent fetches nothing else", RootFile, p)
	case strings.HasPrefix(p, "/"):
		return invalid(ReasonInvalidBranch, "%s lists the absolute path %q; paths are relative to the branch root", RootFile, p)
	case path.Clean(p) != p || strings.HasPrefix(p, "../") || p == "..":
		return invalid(ReasonInvalidBranch, "%s lists %q, which is not a clean path inside the branch", RootFile, p)
	}
	return nil
}

func toObject(doc map[string]any) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{Object: doc}
	apiVersion, _, _ := unstructured.NestedString(doc, "apiVersion")
	kind, _, _ := unstructured.NestedString(doc, "kind")
	name, _, _ := unstructured.NestedString(doc, "metadata", "name")
	switch {
	case apiVersion == "" || kind == "" || name == "":
		return nil, fmt.Errorf("an object without apiVersion, kind or metadata.name")
	case kind == "List" || (strings.HasSuffix(kind, "List") && doc["items"] != nil):
		return nil, fmt.Errorf("%s %s: lists are not applied; put each object in the branch", kind, name)
	}
	meta, ok := doc["metadata"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s %s: metadata must be a mapping", kind, name)
	}
	if ns, set := meta["namespace"]; set {
		if _, ok := ns.(string); !ok {
			return nil, fmt.Errorf("%s %s: metadata.namespace must be a string", kind, name)
		}
	}
	return u, nil
}

// ID is the Flux inventory id of an object, <namespace>_<name>_<group>_<kind>, as cli-utils
// writes and parses it (object.ParseObjMetadata).
func ID(u *unstructured.Unstructured) string {
	return object.UnstructuredToObjMetadata(u).String()
}
