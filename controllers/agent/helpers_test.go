package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/cellbranch"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/render"
	"github.com/cellsync/cellsync/test/testenv"
)

const (
	timeout = 40 * time.Second
	poll    = 100 * time.Millisecond
)

var knativeService = schema.GroupVersionKind{Group: "serving.knative.dev", Version: "v1", Kind: "Service"}

// hubCell is the hub's view of a test cell: the same code the hub uses renders its branch.
func hubCell(name, ns string) *hubv1alpha1.Cell {
	return &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: hubv1alpha1.CellSpec{Cluster: "member-1", Namespaces: []string{ns}}}
}

func hubApp(name, image string) *hubv1alpha1.ServerlessApp {
	return &hubv1alpha1.ServerlessApp{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team", Generation: 1},
		Spec: hubv1alpha1.ServerlessAppSpec{
			PlacementRef: corev1.LocalObjectReference{Name: "p"},
			Template:     hubv1alpha1.RevisionTemplate{Image: image},
		},
	}
}

// publish commits an edit of the cell's branch as the hub would, signed when signer is set.
func publish(t *testing.T, branch string, signer *openpgp.Entity, edit gitstore.EditFunc) string {
	t.Helper()
	store, err := gitstore.New(gitstore.Options{URL: repoURL, Credentials: func(context.Context) (transport.AuthMethod, *openpgp.Entity, error) {
		return &githttp.BasicAuth{Username: gitUser, Password: gitPassword}, signer, nil
	}})
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	res, err := store.Apply(context.Background(), gitstore.Update{Message: "test", Branches: []string{branch}, Edit: edit})
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	NewWithT(t).Expect(res.Commits).To(HaveKey(branch), "the edit must change the branch")
	return res.Commits[branch]
}

// putApps renders apps for the cell with the hub's renderer and puts them in the branch.
func putApps(cell *hubv1alpha1.Cell, apps ...*hubv1alpha1.ServerlessApp) gitstore.EditFunc {
	return func(_ string, files *gitstore.Tree) error {
		for _, a := range apps {
			r, err := render.Render(render.Input{App: a, Cell: cell})
			if err != nil {
				return err
			}
			if err := cellbranch.PutApp(files, cellbranch.CellMeta{Cell: cell.Name, Cluster: cell.Spec.Cluster}, cellbranch.AppKey{Namespace: a.Namespace, Name: a.Name}, r, ""); err != nil {
				return err
			}
		}
		return nil
	}
}

func removeApp(cell *hubv1alpha1.Cell, name string) gitstore.EditFunc {
	return func(_ string, files *gitstore.Tree) error {
		return cellbranch.RemoveApp(files, cellbranch.CellMeta{Cell: cell.Name}, cellbranch.AppKey{Namespace: "team", Name: name})
	}
}

// rawFiles replaces the branch with hand-written files, as someone pushing to it directly would.
func rawFiles(files map[string]string) gitstore.EditFunc {
	return func(_ string, t *gitstore.Tree) error {
		for _, p := range t.List() {
			t.Delete(p)
		}
		for p, c := range files {
			t.Write(p, []byte(c))
		}
		return nil
	}
}

// newNamespace makes a cell namespace and binds the shipped applier role in it for the default
// ServiceAccount of every agent namespace seeded so far.
func newNamespace(t *testing.T, name string) {
	t.Helper()
	NewWithT(t).Expect(k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})).To(Succeed())
	for _, ns := range seeded {
		NewWithT(t).Expect(testenv.GrantApplier(context.Background(), member.Config, ns, name)).To(Succeed())
	}
}

func newCellSync(ns, name, cell string, namespaces []string, mut ...func(*agentv1alpha1.CellSync)) *agentv1alpha1.CellSync {
	cs := &agentv1alpha1.CellSync{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: agentv1alpha1.CellSyncSpec{
			Cell:              cell,
			URL:               repoURL,
			SecretRef:         &meta.LocalObjectReference{Name: "git"},
			Interval:          metav1.Duration{Duration: 2 * time.Second},
			Timeout:           &metav1.Duration{Duration: 15 * time.Second},
			HeartbeatInterval: &metav1.Duration{Duration: time.Second},
			Prune:             true,
			Policy:            agentv1alpha1.Policy{Namespaces: namespaces},
		},
	}
	for _, m := range mut {
		m(cs)
	}
	return cs
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		NewWithT(t).Expect(k8s.Create(context.Background(), o)).To(Succeed())
	}
}

// waitCS polls the CellSync until cond holds, checking the status invariants on every read.
func waitCS(t *testing.T, cs *agentv1alpha1.CellSync, cond func(g Gomega, cs *agentv1alpha1.CellSync)) *agentv1alpha1.CellSync {
	t.Helper()
	return testenv.WaitFor(t, k8s, cs, func(c *agentv1alpha1.CellSync) int64 { return c.Status.ObservedGeneration }, cond)
}

func ready(g Gomega, cs *agentv1alpha1.CellSync) *metav1.Condition {
	c := apimeta.FindStatusCondition(cs.Status.Conditions, meta.ReadyCondition)
	g.Expect(c).NotTo(BeNil())
	return c
}

// waitApplied waits until the CellSync applied the commit and is Ready.
func waitApplied(t *testing.T, cs *agentv1alpha1.CellSync, commit string) *agentv1alpha1.CellSync {
	t.Helper()
	return waitCS(t, cs, func(g Gomega, got *agentv1alpha1.CellSync) {
		g.Expect(got.Status.LastAppliedRevision).To(HaveSuffix(commit))
		c := ready(g, got)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "%s: %s", c.Reason, c.Message)
	})
}

func getObject(gvk schema.GroupVersionKind, ns, name string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u)
	return u, err
}

// statusReport reads status/<cell> from the Git server with the git CLI, as the hub would.
func statusReport(g Gomega, cell string) *agentv1alpha1.StatusReport {
	out, err := testenv.Git(gitServer.RepoDir(repoName), "show", "status/"+cell+":status.yaml")
	g.Expect(err).NotTo(HaveOccurred())
	rep := &agentv1alpha1.StatusReport{}
	g.Expect(yaml.Unmarshal([]byte(out), rep)).To(Succeed())
	return rep
}

func gitOut(args ...string) (string, error) {
	return testenv.Git(gitServer.RepoDir(repoName), args...)
}

// svcReady is a Knative Service's Ready condition status.
func svcReady(svc *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(svc.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}
