package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/test/testenv"
)

// maxAgentRSS is the peak resident set the agent must stay under, whatever a branch holds.
const maxAgentRSS = 128 << 20

// Hostile branches, applied by the real agent binary (its own process, so its memory is its
// own) against envtest and the real Git server: each ends with nothing of its commit applied,
// the reason in the CellSync's status and in the signed report, the last good commit kept, the
// next good commit applied, no request the branch asked for, and the agent's peak RSS bounded.
// Meanwhile another cell on the same agent keeps applying at its normal pace.
func TestHostileBranches(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const ns, cell, other = "agent-hostile", "evil", "calm"
	g.Expect(seed(ns)).To(Succeed())
	newNamespace(t, "apps-evil")
	newNamespace(t, "apps-calm")

	// Anything the branch names as a remote location points here: no request may arrive.
	var baitHits atomic.Int64
	bait := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { baitHits.Add(1) }))
	defer bait.Close()
	remote := bait.URL + "/x.yaml"

	key, err := testenv.NewSigningKey("cell-evil")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "report-key"},
		Data: map[string][]byte{gitauth.SecretSigningKey: key.Private}})).To(Succeed())

	proc, err := testenv.StartAgentProcess(member.Kubeconfig, ns, t.TempDir(), "--workers=2")
	g.Expect(err).NotTo(HaveOccurred())
	defer proc.Stop()
	defer func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", tail(proc.Output(), 4000))
		}
	}()

	evil := newCellSync(ns, cell, cell, []string{"apps-evil"}, func(cs *agentv1alpha1.CellSync) {
		cs.Spec.ReportSigning = &agentv1alpha1.ReportSigning{SecretRef: meta.LocalObjectReference{Name: "report-key"}}
		cs.Spec.Policy.AllowedKinds = []string{"ConfigMap", "Pod", "Namespace", "RoleBinding.rbac.authorization.k8s.io",
			"ClusterRoleBinding.rbac.authorization.k8s.io", "Service.serving.knative.dev", "CellSync.agent.cellsync.io", "Cell.hub.cellsync.io"}
	})
	calm := newCellSync(ns, other, other, []string{"apps-calm"})

	work, err := testenv.CloneSource(gitServer.AuthURL(repoName), t.TempDir(), "cells/"+cell)
	g.Expect(err).NotTo(HaveOccurred())
	// Go's CGI host takes no chunked request bodies: let git send the 200 MB pack in one piece.
	_, err = testenv.Git(work.Dir, "config", "http.postBuffer", "524288000")
	g.Expect(err).NotTo(HaveOccurred())
	calmWork, err := testenv.CloneSource(gitServer.AuthURL(repoName), t.TempDir(), "cells/"+other)
	g.Expect(err).NotTo(HaveOccurred())

	good := func(i int) map[string]string {
		return map[string]string{"kustomization.yaml": kustomization + "- good.yaml\n", "good.yaml": configMapData("apps-evil", "good", fmt.Sprint(i))}
	}
	head, err := work.Commit("good 0", good(0))
	g.Expect(err).NotTo(HaveOccurred())
	calmHead, err := calmWork.Commit("calm 0", map[string]string{"kustomization.yaml": kustomization + "- c.yaml\n", "c.yaml": configMapData("apps-calm", "calm", "0")})
	g.Expect(err).NotTo(HaveOccurred())
	create(t, evil, calm)
	waitApplied(t, evil, head)
	waitApplied(t, calm, calmHead)

	// The calm cell's normal time to apply a new commit.
	start := time.Now()
	calmHead, err = calmWork.Commit("calm 1", map[string]string{"c.yaml": configMapData("apps-calm", "calm", "1")})
	g.Expect(err).NotTo(HaveOccurred())
	waitApplied(t, calm, calmHead)
	normal := time.Since(start)

	pod := func(spec string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: root\n  namespace: apps-evil\nspec:\n" + spec
	}
	cases := []struct {
		name    string
		files   map[string]string
		blob    int64 // bytes of a blob written next to the files; random when below 512 MiB
		reason  string
		message string
		absent  types.NamespacedName
	}{
		{name: "CellSync in the cell's namespace", reason: agentv1alpha1.ReasonPolicyViolation, message: "cellsync's own API (agent.cellsync.io)",
			files: map[string]string{"kustomization.yaml": kustomization + "- cs.yaml\n", "cs.yaml": "apiVersion: agent.cellsync.io/v1alpha1\nkind: CellSync\nmetadata:\n  name: escalate\n  namespace: apps-evil\nspec:\n  cell: other\n  url: " + repoURL + "\n  policy:\n    namespaces: [kube-system]\n    allowClusterScoped: true\n"}},
		{name: "hub object", reason: agentv1alpha1.ReasonPolicyViolation, message: "cellsync's own API (hub.cellsync.io)",
			files: map[string]string{"kustomization.yaml": kustomization + "- c.yaml\n", "c.yaml": "apiVersion: hub.cellsync.io/v1alpha1\nkind: Cell\nmetadata:\n  name: c\n"}},
		{name: "bases", reason: agentv1alpha1.ReasonInvalidBranch, message: `uses "bases"`, files: map[string]string{"kustomization.yaml": "bases:\n- " + bait.URL + "/base\n"}},
		{name: "configMapGenerator URL", reason: agentv1alpha1.ReasonInvalidBranch, message: `uses "configMapGenerator"`, files: map[string]string{"kustomization.yaml": "configMapGenerator:\n- name: x\n  files:\n  - " + remote + "\n"}},
		{name: "openapi", reason: agentv1alpha1.ReasonInvalidBranch, message: `uses "openapi"`, files: map[string]string{"kustomization.yaml": "openapi:\n  path: " + remote + "\n"}},
		{name: "crds", reason: agentv1alpha1.ReasonInvalidBranch, message: `uses "crds"`, files: map[string]string{"kustomization.yaml": "crds:\n- " + remote + "\n"}},
		{name: "configurations", reason: agentv1alpha1.ReasonInvalidBranch, message: `uses "configurations"`, files: map[string]string{"kustomization.yaml": "configurations:\n- " + remote + "\n"}},
		{name: "replacements", reason: agentv1alpha1.ReasonInvalidBranch, message: `uses "replacements"`, files: map[string]string{"kustomization.yaml": "replacements:\n- path: " + remote + "\n"}},
		{name: "patchesStrategicMerge", reason: agentv1alpha1.ReasonInvalidBranch, message: `uses "patchesStrategicMerge"`, files: map[string]string{"kustomization.yaml": "patchesStrategicMerge:\n- " + remote + "\n"}},
		{name: "remote resource", reason: agentv1alpha1.ReasonInvalidBranch, message: "a remote location", files: map[string]string{"kustomization.yaml": kustomization + "- " + bait.URL + "/org/repo\n"}},
		{name: "GitHub shorthand", reason: agentv1alpha1.ReasonInvalidBranch, message: "which the branch does not have", files: map[string]string{"kustomization.yaml": kustomization + "- GitHub.com/org/repo\n"}},
		{name: "scp form", reason: agentv1alpha1.ReasonInvalidBranch, message: "which the branch does not have", files: map[string]string{"kustomization.yaml": kustomization + "- " + strings.TrimPrefix(bait.URL, "http://") + ":org/repo\n"}},
		{name: "alias bomb", reason: agentv1alpha1.ReasonInvalidBranch, message: "alias bomb", files: map[string]string{"kustomization.yaml": kustomization + "- bomb.yaml\n", "bomb.yaml": aliasBomb}},
		{name: "200 MB blob", reason: agentv1alpha1.ReasonLimitExceeded, message: "cut off", blob: 200 << 20, files: map[string]string{"kustomization.yaml": kustomization + "- good.yaml\n"}},
		{name: "1 GiB blob", reason: agentv1alpha1.ReasonLimitExceeded, message: "blob of 1073741824 bytes", blob: 1 << 30, files: map[string]string{"kustomization.yaml": kustomization + "- good.yaml\n"}},
		{name: "foreign namespace", reason: agentv1alpha1.ReasonPolicyViolation, message: `namespace "kube-system" is not one of the cell's namespaces`,
			files: map[string]string{"kustomization.yaml": kustomization + "- a.yaml\n", "a.yaml": configMapData("kube-system", "grab", "x")}, absent: types.NamespacedName{Namespace: "kube-system", Name: "grab"}},
		{name: "cluster-scoped", reason: agentv1alpha1.ReasonPolicyViolation, message: "cluster-scoped objects are refused",
			files: map[string]string{"kustomization.yaml": kustomization + "- a.yaml\n", "a.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: grabbed\n"}},
		{name: "ClusterRoleBinding", reason: agentv1alpha1.ReasonPolicyViolation, message: "RBAC objects are refused",
			files: map[string]string{"kustomization.yaml": kustomization + "- a.yaml\n", "a.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: pwn\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: apps-evil\n"}},
		{name: "RoleBinding", reason: agentv1alpha1.ReasonPolicyViolation, message: "RBAC objects are refused",
			files: map[string]string{"kustomization.yaml": kustomization + "- a.yaml\n", "a.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: pwn\n  namespace: apps-evil\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: admin\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: apps-evil\n"}},
		{name: "privileged Pod", reason: agentv1alpha1.ReasonPolicyViolation, message: `violates the "baseline" Pod Security Standard`,
			files: map[string]string{"kustomization.yaml": kustomization + "- a.yaml\n", "a.yaml": pod("  hostPID: true\n  containers:\n  - name: c\n    image: x\n    securityContext:\n      privileged: true\n  volumes:\n  - name: root\n    hostPath:\n      path: /\n")}},
		{name: "privileged Knative template", reason: agentv1alpha1.ReasonPolicyViolation, message: "privileged",
			files: map[string]string{"kustomization.yaml": kustomization + "- a.yaml\n", "a.yaml": "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: web\n  namespace: apps-evil\nspec:\n  template:\n    spec:\n      containers:\n      - image: x\n        securityContext:\n          privileged: true\n"}},
		{name: "core NodePort Service", reason: agentv1alpha1.ReasonPolicyViolation, message: "kind Service is not in the allowed kinds",
			files: map[string]string{"kustomization.yaml": kustomization + "- a.yaml\n", "a.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: np\n  namespace: apps-evil\nspec:\n  type: NodePort\n  ports:\n  - port: 80\n"}},
	}
	var slowest time.Duration
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			before, err := getObject(configMapGVK, "apps-evil", "good")
			g.Expect(err).NotTo(HaveOccurred())
			files := map[string]string{"good.yaml": ""}
			for p, c := range tc.files {
				files[p] = c
			}
			if tc.blob > 0 {
				g.Expect(writeBlob(filepath.Join(work.Dir, "blob.bin"), tc.blob)).To(Succeed())
				defer func() { _ = os.Remove(filepath.Join(work.Dir, "blob.bin")) }()
			}
			// The blob cases list the last good file again: their commit would apply but for the
			// blob, which is what the fetch guard must refuse.
			if _, keep := tc.files["good.yaml"]; !keep && strings.Contains(tc.files["kustomization.yaml"], "good.yaml") {
				delete(files, "good.yaml")
			}
			bad, err := work.Commit("hostile: "+tc.name, files)
			g.Expect(err).NotTo(HaveOccurred())

			// The calm cell moves while the hostile commit is refused.
			calmStart := time.Now()
			next, err := calmWork.Commit(fmt.Sprintf("calm during %d", i), map[string]string{"c.yaml": configMapData("apps-calm", "calm", fmt.Sprint(i+10))})
			g.Expect(err).NotTo(HaveOccurred())

			got := waitRefused(t, evil, bad, tc.reason, true, tc.message)
			g.Expect(ready(g, got).Message).To(ContainSubstring("keeping commit"))
			waitApplied(t, calm, next)
			d := time.Since(calmStart)
			t.Logf("calm cell applied its commit in %s beside this one", d.Round(time.Millisecond))
			// A blob case loads the whole machine (the Git server streams hundreds of MB), so its
			// time says nothing about the agent; it is logged, not compared.
			if tc.blob == 0 && d > slowest {
				slowest = d
			}
			g.Eventually(func(g Gomega) {
				rep := signedReport(g, cell, key.Public)
				g.Expect(rep.Refusal).NotTo(BeNil(), "report: %+v", rep)
				g.Expect(rep.Refusal.Commit).To(Equal(bad))
				g.Expect(rep.Refusal.Reason).To(Equal(tc.reason))
				g.Expect(rep.Refusal.Message).To(ContainSubstring(tc.message))
			}, timeout, poll).Should(Succeed())

			after, err := getObject(configMapGVK, "apps-evil", "good")
			g.Expect(err).NotTo(HaveOccurred(), "the last good state must stay")
			g.Expect(after.GetResourceVersion()).To(Equal(before.GetResourceVersion()))
			if tc.absent.Name != "" {
				_, err := getObject(configMapGVK, tc.absent.Namespace, tc.absent.Name)
				g.Expect(err).To(HaveOccurred())
			}

			if tc.blob > 0 {
				g.Expect(os.Remove(filepath.Join(work.Dir, "blob.bin"))).To(Succeed())
			}
			head, err := work.Commit(fmt.Sprintf("good %d", i+1), good(i+1))
			g.Expect(err).NotTo(HaveOccurred())
			waitApplied(t, evil, head)
			g.Eventually(func(g Gomega) {
				g.Expect(signedReport(g, cell, key.Public).Refusal).To(BeNil())
			}, timeout, poll).Should(Succeed())
		})
	}

	rss, err := testenv.PeakRSS(proc.Cmd.Process.Pid)
	g.Expect(err).NotTo(HaveOccurred())
	t.Logf("agent peak RSS %.1f MiB; calm cell: %s normally, %s at worst beside a hostile commit", float64(rss)/(1<<20), normal.Round(time.Millisecond), slowest.Round(time.Millisecond))
	g.Expect(rss).To(BeNumerically("<", maxAgentRSS), "the agent's peak RSS")
	g.Expect(baitHits.Load()).To(BeZero(), "the agent reached a location a branch named")
	// Only the repositories CellSyncs name (the suite's, and a status repository another test
	// gives its cell), never a location a branch named.
	for _, line := range gitServer.Log() {
		g.Expect(line).To(MatchRegexp(`^(GET|POST) /(`+repoName+`|`+statusRepoName+`)\.git/(info/refs\?service=git-(upload|receive)-pack|git-(upload|receive)-pack)$`), "a request no agent makes")
	}
	// Isolation: beside a hostile commit the calm cell applies in about its normal time. The
	// slack covers two poll intervals and a loaded machine; one shared worker blocked on a
	// hostile commit used to cost minutes.
	g.Expect(slowest).To(BeNumerically("<", 3*normal+2*calm.Spec.Interval.Duration+10*time.Second))
}

const aliasBomb = `apiVersion: v1
kind: ConfigMap
metadata:
  name: bomb
  namespace: apps-evil
data: &a {a: "x", b: "x", c: "x", d: "x", e: "x", f: "x", g: "x", h: "x", i: "x"}
x1: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
x2: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
x3: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
x4: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
x5: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
x6: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
x7: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
x8: [*h,*h,*h,*h,*h,*h,*h,*h,*h]
`

func configMapData(ns, name, v string) string {
	return configMap(ns, name) + "  v: \"" + v + "\"\n"
}

// writeBlob writes size bytes: zeros (sparse, compressing to almost nothing) from 512 MiB up,
// random bytes (that do not compress) below.
func writeBlob(path string, size int64) error {
	if size >= 512<<20 {
		return exec.Command("truncate", "-s", fmt.Sprint(size), path).Run()
	}
	return exec.Command("sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > %s", size, path)).Run()
}

// signedReport reads status/<cell> and checks its commit is signed by the cell's key.
func signedReport(g Gomega, cell, publicKey string) *agentv1alpha1.StatusReport {
	repo, err := git.PlainOpen(gitServer.RepoDir(repoName))
	g.Expect(err).NotTo(HaveOccurred())
	ref, err := repo.Reference(plumbing.NewBranchReferenceName("status/"+cell), true)
	g.Expect(err).NotTo(HaveOccurred())
	c, err := repo.CommitObject(ref.Hash())
	g.Expect(err).NotTo(HaveOccurred())
	_, err = gitauth.VerifyCommit(c, []string{publicKey})
	g.Expect(err).NotTo(HaveOccurred(), "the report commit must be signed by the cell's key")
	return statusReport(g, cell)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

var configMapGVK = corev1.SchemeGroupVersion.WithKind("ConfigMap")
