package hub_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

const (
	timeout = 30 * time.Second
	poll    = 100 * time.Millisecond
)

func newNamespace(t *testing.T, name, tenant string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if tenant != "" {
		ns.Labels = map[string]string{hubv1alpha1.LabelTenant: tenant}
	}
	NewWithT(t).Expect(k8s.Create(context.Background(), ns)).To(Succeed())
}

func newCell(t *testing.T, name, cluster string, labels map[string]string) *hubv1alpha1.Cell {
	t.Helper()
	c := &hubv1alpha1.Cell{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       hubv1alpha1.CellSpec{Cluster: cluster, Namespaces: []string{"apps"}},
	}
	NewWithT(t).Expect(k8s.Create(context.Background(), c)).To(Succeed())
	return c
}

func newPlacement(ns, name string, spec hubv1alpha1.CellPlacementSpec) *hubv1alpha1.CellPlacement {
	return &hubv1alpha1.CellPlacement{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func newApp(ns, name, placement, image string, mut ...func(*hubv1alpha1.ServerlessApp)) *hubv1alpha1.ServerlessApp {
	a := &hubv1alpha1.ServerlessApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: hubv1alpha1.ServerlessAppSpec{
			PlacementRef: corev1.LocalObjectReference{Name: placement},
			Template:     hubv1alpha1.RevisionTemplate{Image: image},
		},
	}
	for _, m := range mut {
		m(a)
	}
	return a
}

func selectLabels(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		NewWithT(t).Expect(k8s.Create(context.Background(), o)).To(Succeed())
	}
}

// waitFor polls the app until cond holds, checking the status invariants on every read.
func waitFor(t *testing.T, app *hubv1alpha1.ServerlessApp, cond func(g Gomega, a *hubv1alpha1.ServerlessApp)) *hubv1alpha1.ServerlessApp {
	t.Helper()
	return testenv.WaitFor(t, k8s, app, func(a *hubv1alpha1.ServerlessApp) int64 { return a.Status.ObservedGeneration }, cond)
}

// waitReady waits until the app's generation is rendered into its cells' branches: Ready, or
// (where no agent reports, as in most of this suite) Reconciling while it waits for its cells.
func waitReady(t *testing.T, app *hubv1alpha1.ServerlessApp) *hubv1alpha1.ServerlessApp {
	t.Helper()
	return waitFor(t, app, func(g Gomega, a *hubv1alpha1.ServerlessApp) {
		g.Expect(a.Status.ObservedGeneration).To(Equal(a.Generation))
		ready := apimeta.FindStatusCondition(a.Status.Conditions, meta.ReadyCondition)
		g.Expect(ready).NotTo(BeNil())
		switch ready.Reason {
		case hubv1alpha1.ReasonRendered:
			g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), "Ready: %s %s", ready.Reason, ready.Message)
		case hubv1alpha1.ReasonWaitingForCells:
			g.Expect(a.Status.ReadyCells).To(BeNumerically("<", a.Status.CellCount), "waiting with every cell ready: %s", ready.Message)
			g.Expect(apimeta.IsStatusConditionTrue(a.Status.Conditions, meta.ReconcilingCondition)).To(BeTrue(), "waiting for cells is Reconciling")
		default:
			g.Expect(ready.Reason).To(Equal(hubv1alpha1.ReasonRendered), "Ready: %s %s", ready.Reason, ready.Message)
		}
	})
}

func waitStalled(t *testing.T, app *hubv1alpha1.ServerlessApp, reason string) *hubv1alpha1.ServerlessApp {
	t.Helper()
	return waitFor(t, app, func(g Gomega, a *hubv1alpha1.ServerlessApp) {
		g.Expect(apimeta.IsStatusConditionTrue(a.Status.Conditions, meta.StalledCondition)).To(BeTrue(), "conditions: %+v", a.Status.Conditions)
		g.Expect(a.Status.ObservedGeneration).To(Equal(a.Generation), "a stalled generation counts as observed")
		ready := apimeta.FindStatusCondition(a.Status.Conditions, meta.ReadyCondition)
		g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(ready.Reason).To(Equal(reason))
	})
}

// requestReconcile asks for a reconcile as `flux reconcile` would and waits until it was handled.
func requestReconcile(t *testing.T, app *hubv1alpha1.ServerlessApp) {
	t.Helper()
	token, err := testenv.RequestReconcile(context.Background(), k8s, app.DeepCopy())
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	waitFor(t, app, func(g Gomega, a *hubv1alpha1.ServerlessApp) {
		g.Expect(a.Status.LastHandledReconcileAt).To(Equal(token))
	})
}

// expectEvent waits for an event with the type and reason on the object.
func expectEvent(t *testing.T, obj client.Object, eventType, reason string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		seen, err := testenv.EventsFor(context.Background(), k8s, withKind(obj))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(seen).To(ContainElement(eventType + "/" + reason))
	}, timeout, poll).Should(Succeed())
}

// withKind fills in the kind that typed objects built in tests lack.
func withKind(obj client.Object) client.Object {
	o := obj.DeepCopyObject().(client.Object)
	gvks, _, _ := k8s.Scheme().ObjectKinds(o)
	if len(gvks) > 0 {
		o.GetObjectKind().SetGroupVersionKind(gvks[0])
	}
	return o
}

func heads(t *testing.T) map[string]string {
	t.Helper()
	h, err := gitServer.Heads(repoName)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return h
}

// checkout clones a cell branch with the git CLI, as an agent or Argo CD would.
func checkout(t *testing.T, branch string) string {
	t.Helper()
	dir := t.TempDir()
	_, err := testenv.Git(dir, "clone", "-q", "--single-branch", "--branch", branch, gitServer.AuthURL(repoName), ".")
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return dir
}

// build runs kustomize build on a cell branch's root and returns the objects by kind/name.
func build(t *testing.T, branch string) map[string]*unstructured.Unstructured {
	t.Helper()
	g := NewWithT(t)
	out, err := testenv.KustomizeBuild(checkout(t, branch))
	g.Expect(err).NotTo(HaveOccurred())
	objs := map[string]*unstructured.Unstructured{}
	for _, doc := range strings.Split(out, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		g.Expect(yaml.Unmarshal([]byte(doc), &u.Object)).To(Succeed())
		objs[u.GetKind()+"/"+u.GetName()] = u
	}
	return objs
}

func fileExists(t *testing.T, branch, path string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(checkout(t, branch), path))
	return err == nil
}

// verifyCommit runs git verify-commit on a branch head with only the hub's public key trusted.
func verifyCommit(t *testing.T, branch string) (string, error) {
	t.Helper()
	return testenv.VerifyCommit(gitServer.RepoDir(repoName), branch, signingKey)
}
