// Package install tests cellsync as a user installs it: the images `make images` builds, the
// Helm charts, and the shipped RBAC, run by the real binaries with their own ServiceAccounts'
// tokens against envtest apiservers.
package install

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/cellsync/cellsync/test/testenv"
)

// helm is the pinned helm that `make test` builds into bin/.
func helm(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := os.Getenv("CELLSYNC_HELM")
	if bin == "" {
		bin = filepath.Join(testenv.RepoRoot(), "bin", "helm-"+makeVar(t, "HELM_VERSION"))
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = testenv.RepoRoot()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

// makeVar reads a variable's default from the Makefile.
func makeVar(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` \?= (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("the Makefile sets no %s", name)
	}
	return string(m[1])
}

// render is `helm template` of a chart with CRDs, decoded.
func render(t *testing.T, chart, release, ns string, set ...string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", release, filepath.Join("charts", chart), "-n", ns, "--include-crds"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	objs, err := testenv.DecodeManifests(helm(t, args...))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// kustomizeBuild is `kustomize build` of a config/ folder, decoded.
func kustomizeBuild(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	bin := os.Getenv("CELLSYNC_KUSTOMIZE")
	if bin == "" {
		bin = filepath.Join(testenv.RepoRoot(), "bin", "kustomize-"+makeVar(t, "KUSTOMIZE_VERSION"))
	}
	cmd := exec.Command(bin, "build", dir)
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, out)
	}
	objs, err := testenv.DecodeManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, u := range objs {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

func convert[T any](t *testing.T, u *unstructured.Unstructured, into *T) *T {
	t.Helper()
	if u == nil {
		t.Fatalf("no object to convert into %T", into)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatal(err)
	}
	return into
}

var (
	imagesOnce sync.Once
	imagesErr  error
	imagesOut  string
)

// images builds the images with `make images` once per test binary, and says whether a
// container runtime is here to run them.
func images(t *testing.T) bool {
	t.Helper()
	if !testenv.HasContainerRuntime() {
		return false
	}
	imagesOnce.Do(func() {
		cmd := exec.Command("make", "images")
		cmd.Dir = testenv.RepoRoot()
		cmd.Env = append(testenv.PodmanEnv(), "MAKEFLAGS=")
		out, err := cmd.CombinedOutput()
		imagesOut, imagesErr = string(out), err
	})
	if imagesErr != nil {
		t.Fatalf("make images: %v\n%s", imagesErr, imagesOut)
	}
	return true
}

func image(t *testing.T, name string) string {
	return makeVar(t, "IMAGE_REGISTRY") + "/" + name + ":" + makeVar(t, "VERSION")
}

// podman runs podman with the settings these machines need.
func podman(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := testenv.Podman(args...).CombinedOutput()
	return string(out), err
}

// grant is one (API group, resource, verb) a role allows or a request used.
type grant struct{ group, resource, verb string }

func (g grant) String() string {
	group := g.group
	if group == "" {
		group = "core"
	}
	return fmt.Sprintf("%s %s/%s", g.verb, group, g.resource)
}

// granted is every grant of the rules.
func granted(rules []rbacv1.PolicyRule) map[grant]bool {
	out := map[grant]bool{}
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out[grant{g, res, v}] = true
				}
			}
		}
	}
	return out
}

// auditEvent is what the tests read of an apiserver audit event.
type auditEvent struct {
	Verb string `json:"verb"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		APIGroup    string `json:"apiGroup"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestURI string `json:"requestURI"`
}

// usage is what a user asked an apiserver, from its audit log: the grants used (as itself),
// whether it impersonated anyone, and the requests that were forbidden.
type usage struct {
	used map[grant]int
	// created are the patches (server-side applies) that created their object.
	created      map[grant]int
	impersonated map[string]int
	forbidden    []string
}

func readAudit(t *testing.T, path, user string) usage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := usage{used: map[grant]int{}, created: map[grant]int{}, impersonated: map[string]int{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit log %s: %v", path, err)
		}
		if ev.User.Username != user {
			continue
		}
		if ev.ResponseStatus != nil && ev.ResponseStatus.Code == 403 {
			u.forbidden = append(u.forbidden, ev.Verb+" "+ev.RequestURI)
		}
		if ev.ImpersonatedUser != nil {
			u.impersonated[ev.ImpersonatedUser.Username]++
			continue
		}
		if ev.ObjectRef == nil {
			continue // discovery and other non-resource requests
		}
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		g := grant{ev.ObjectRef.APIGroup, res, ev.Verb}
		u.used[g]++
		if ev.Verb == "patch" && ev.ResponseStatus != nil && ev.ResponseStatus.Code == 201 {
			u.created[g]++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func sortedGrants(m map[grant]bool) []string {
	var out []string
	for g := range m {
		out = append(out, g.String())
	}
	sort.Strings(out)
	return out
}
