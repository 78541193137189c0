package hub_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

const sourceApp = `apiVersion: hub.cellsync.io/v1alpha1
kind: CellPlacement
metadata:
  name: everywhere
  namespace: synced
spec:
  cells: [src-1]
---
apiVersion: hub.cellsync.io/v1alpha1
kind: ServerlessApp
metadata:
  name: hello
  namespace: synced
spec:
  placementRef: {name: everywhere}
  template:
    image: ghcr.io/acme/hello:%s
`

func waitSource(t *testing.T, src *hubv1alpha1.AppSource, cond func(g Gomega, s *hubv1alpha1.AppSource)) *hubv1alpha1.AppSource {
	t.Helper()
	return testenv.WaitFor(t, k8s, src, func(s *hubv1alpha1.AppSource) int64 { return s.Status.ObservedGeneration }, cond)
}

// A git push to main is how apps ship: the AppSource applies the hub objects it finds under its
// path, reports the synced commit, prunes what a commit removes, and refuses a bad commit as a
// whole (bad YAML, a kind it does not sync, a namespace it may not write) with nothing applied.
func TestSourceSyncFromMain(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "synced", "")
	newNamespace(t, "forbidden", "")
	newCell(t, "src-1", "member-src", nil)
	src := &hubv1alpha1.AppSource{
		ObjectMeta: metav1.ObjectMeta{Namespace: "synced", Name: "main"},
		Spec:       hubv1alpha1.AppSourceSpec{Path: "apps", Interval: metav1.Duration{Duration: 500 * time.Millisecond}},
	}
	create(t, src)

	// No main branch yet: the source says so and waits.
	waitSource(t, src, func(g Gomega, s *hubv1alpha1.AppSource) {
		ready := apimeta.FindStatusCondition(s.Status.Conditions, meta.ReadyCondition)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Reason).To(Equal(hubv1alpha1.ReasonBranchNotFound))
	})

	repo, err := testenv.CloneSource(gitServer.AuthURL(repoName), t.TempDir(), "main")
	g.Expect(err).NotTo(HaveOccurred())
	c1, err := repo.Commit("Add hello", map[string]string{"apps/hello.yaml": fmt.Sprintf(sourceApp, "v1"), "README.md": "not under apps/"})
	g.Expect(err).NotTo(HaveOccurred())

	got := waitSource(t, src, func(g Gomega, s *hubv1alpha1.AppSource) {
		g.Expect(s.Status.LastSyncedCommit).To(Equal(c1))
		g.Expect(apimeta.IsStatusConditionTrue(s.Status.Conditions, meta.ReadyCondition)).To(BeTrue())
	})
	g.Expect(got.Status.Objects).To(HaveLen(2))
	app := &hubv1alpha1.ServerlessApp{ObjectMeta: metav1.ObjectMeta{Namespace: "synced", Name: "hello"}}
	app = waitReady(t, app)
	g.Expect(app.Annotations[hubv1alpha1.SourceCommitAnnotation]).To(Equal(c1))
	g.Expect(app.Status.SourceCommit).To(Equal(c1))
	out, err := exec.Command("kubectl", "--kubeconfig", hubCluster.Kubeconfig, "get", "appsources", "-n", "synced").CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))
	g.Expect(string(out)).To(MatchRegexp(`(?m)^main\s+main\s+apps\s+` + c1 + `\s+True\s+Synced commit`))

	// A commit that does not touch the app leaves its source commit (and its cell branches) alone.
	before := cellHeads(t)
	c2, err := repo.Commit("Docs", map[string]string{"README.md": "still not under apps/"})
	g.Expect(err).NotTo(HaveOccurred())
	waitSource(t, src, func(g Gomega, s *hubv1alpha1.AppSource) { g.Expect(s.Status.LastSyncedCommit).To(Equal(c2)) })
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(app), app)).To(Succeed())
	g.Expect(app.Annotations[hubv1alpha1.SourceCommitAnnotation]).To(Equal(c1))
	g.Expect(cellHeads(t)).To(Equal(before))

	// A change ships by push.
	c3, err := repo.Commit("hello v2", map[string]string{"apps/hello.yaml": fmt.Sprintf(sourceApp, "v2")})
	g.Expect(err).NotTo(HaveOccurred())
	waitFor(t, app, func(g Gomega, a *hubv1alpha1.ServerlessApp) {
		g.Expect(a.Spec.Template.Image).To(Equal("ghcr.io/acme/hello:v2"))
		g.Expect(a.Annotations[hubv1alpha1.SourceCommitAnnotation]).To(Equal(c3))
	})
	waitReady(t, app)

	// Bad commits: each refused as a whole, reported on the source, nothing applied.
	bad := []struct {
		name, file, content, reason, message string
	}{
		{"invalid YAML", "apps/broken.yaml", "kind: [unclosed\n", hubv1alpha1.ReasonInvalidSource, "apps/broken.yaml"},
		{"unknown kind", "apps/deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, namespace: synced}\n", hubv1alpha1.ReasonInvalidSource, `Deployment "x" is not a kind the source syncs`},
		{"namespace the source may not write", "apps/other.yaml", "apiVersion: hub.cellsync.io/v1alpha1\nkind: CellPlacement\nmetadata: {name: x, namespace: forbidden}\nspec: {cells: [src-1]}\n", hubv1alpha1.ReasonSourceForbidden, `namespace "forbidden" is not one this source may write (allowed: synced)`},
		{"a Cell (cluster-scoped, off by default)", "apps/cell.yaml", "apiVersion: hub.cellsync.io/v1alpha1\nkind: Cell\nmetadata: {name: sneaky}\nspec: {cluster: x, namespaces: [apps]}\n", hubv1alpha1.ReasonSourceForbidden, "this source may write only CellPlacement, ServerlessApp"},
		{"an app the apiserver refuses", "apps/bad-app.yaml", "apiVersion: hub.cellsync.io/v1alpha1\nkind: ServerlessApp\nmetadata: {name: bad, namespace: synced}\nspec: {template: {image: x}}\n", hubv1alpha1.ReasonInvalidSource, "refused by the hub apiserver"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(app), app)).To(Succeed())
			rv := app.ResourceVersion
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(src), src)).To(Succeed())
			synced := src.Status.LastSyncedCommit
			// The bad file comes with a change to hello that must not be applied either.
			commit, err := repo.Commit("bad: "+b.name, map[string]string{b.file: b.content, "apps/hello.yaml": fmt.Sprintf(sourceApp, "v3")})
			g.Expect(err).NotTo(HaveOccurred())
			waitSource(t, src, func(g Gomega, s *hubv1alpha1.AppSource) {
				g.Expect(s.Status.LastAttemptedCommit).To(Equal(commit))
				g.Expect(s.Status.LastSyncedCommit).To(Equal(synced))
				g.Expect(apimeta.IsStatusConditionTrue(s.Status.Conditions, meta.StalledCondition)).To(BeTrue())
				ready := apimeta.FindStatusCondition(s.Status.Conditions, meta.ReadyCondition)
				g.Expect(ready.Reason).To(Equal(b.reason))
				g.Expect(ready.Message).To(ContainSubstring(b.message))
			})
			expectEvent(t, src, corev1.EventTypeWarning, b.reason)
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(app), app)).To(Succeed())
			g.Expect(app.ResourceVersion).To(Equal(rv), "nothing of a refused commit is applied")
			g.Expect(app.Spec.Template.Image).To(Equal("ghcr.io/acme/hello:v2"))
			revert, err := repo.Commit("revert", map[string]string{b.file: "", "apps/hello.yaml": fmt.Sprintf(sourceApp, "v2")})
			g.Expect(err).NotTo(HaveOccurred())
			waitSource(t, src, func(g Gomega, s *hubv1alpha1.AppSource) {
				g.Expect(s.Status.LastSyncedCommit).To(Equal(revert))
				g.Expect(apimeta.IsStatusConditionTrue(s.Status.Conditions, meta.ReadyCondition)).To(BeTrue())
			})
		})
	}

	// Deleting the app from main deletes it on the hub (and its finalizer takes it out of every
	// cell branch); the placement stays.
	placementOnly := strings.SplitN(fmt.Sprintf(sourceApp, "v2"), "---\n", 2)[0]
	c4, err := repo.Commit("Remove hello", map[string]string{"apps/hello.yaml": placementOnly})
	g.Expect(err).NotTo(HaveOccurred())
	waitSource(t, src, func(g Gomega, s *hubv1alpha1.AppSource) {
		g.Expect(s.Status.LastSyncedCommit).To(Equal(c4))
		g.Expect(s.Status.Objects).To(HaveLen(1))
	})
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(app), &hubv1alpha1.ServerlessApp{}))
	}, timeout, poll).Should(BeTrue())
	g.Expect(fileExists(t, "cells/src-1", ".cellsync/apps/synced.hello.yaml")).To(BeFalse())
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: "synced", Name: "everywhere"}, &hubv1alpha1.CellPlacement{})).To(Succeed())
}
