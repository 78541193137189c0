package agent_test

import (
	"context"
	"testing"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

func image(g Gomega, svc *unstructured.Unstructured) string {
	containers, _, _ := unstructured.NestedSlice(svc.Object, "spec", "template", "spec", "containers")
	g.Expect(containers).NotTo(BeEmpty())
	return containers[0].(map[string]any)["image"].(string)
}

// A branch rendered by the hub is applied and reported healthy; an update is applied; an app
// removed from the branch is pruned and nothing else is; a failing revision is reported
// unhealthy with Knative's message.
func TestApplyUpdatePruneAndReport(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "apps1")
	cell := hubCell("c1", "apps1")
	head := publish(t, "cells/c1", nil, putApps(cell, hubApp("hello", "ghcr.io/acme/hello:v1"), hubApp("other", "ghcr.io/acme/other:v1")))
	// Something the agent did not apply, in the same namespace: it must survive every prune.
	bystander := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "bystander", Namespace: "apps1"}, Data: map[string]string{"k": "v"}}
	create(t, bystander)

	cs := newCellSync(agentNamespace, "c1", "c1", []string{"apps1"})
	create(t, cs)
	got := waitApplied(t, cs, head)
	g.Expect(got.Status.LastAttemptedRevision).To(Equal("cells/c1@sha1:" + head))
	g.Expect(got.Status.Inventory.Entries).To(ConsistOf(
		agentv1alpha1.ResourceRef{ID: "apps1_hello_serving.knative.dev_Service", V: "v1"},
		agentv1alpha1.ResourceRef{ID: "apps1_other_serving.knative.dev_Service", V: "v1"},
	))
	g.Expect(apimeta.IsStatusConditionTrue(got.Status.Conditions, "Healthy")).To(BeTrue())
	hello, err := getObject(knativeService, "apps1", "hello")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hello.GetLabels()).To(HaveKeyWithValue("agent.cellsync.io/name", "c1"))

	// The report on status/c1 says so, with Knative's view of each app.
	g.Eventually(func(g Gomega) {
		rep := statusReport(g, "c1")
		g.Expect(rep.Kind).To(Equal(agentv1alpha1.StatusReportKind))
		g.Expect(rep.AppliedCommit).To(Equal(head))
		g.Expect(rep.Apps).To(HaveLen(2))
		g.Expect(rep.Apps[0].Name).To(Equal("hello"))
		g.Expect(rep.Apps[0].App).To(Equal("hello"))
		g.Expect(rep.Apps[0].AppNamespace).To(Equal("team"))
		g.Expect(rep.Apps[0].Ready).To(BeTrue())
		g.Expect(rep.Apps[0].LatestReadyRevision).To(HavePrefix("hello-"))
		g.Expect(rep.Apps[0].Traffic).To(HaveLen(1))
		g.Expect(rep.Apps[0].Traffic[0].Percent).To(BeEquivalentTo(100))
	}, timeout, poll).Should(Succeed())
	// One orphan commit: the report ref never grows history.
	count, err := gitCount("status/c1")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(count).To(Equal("1"))

	// An update is applied.
	head = publish(t, "cells/c1", nil, putApps(cell, hubApp("hello", "ghcr.io/acme/hello:v2")))
	waitApplied(t, cs, head)
	hello2, err := getObject(knativeService, "apps1", "hello")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(image(g, hello2)).To(Equal("ghcr.io/acme/hello:v2"))
	g.Expect(hello2.GetUID()).To(Equal(hello.GetUID()), "updated in place, not re-created")

	// "other" leaves the branch: it is pruned, and nothing else is.
	head = publish(t, "cells/c1", nil, removeApp(cell, "other"))
	waitApplied(t, cs, head)
	_, err = getObject(knativeService, "apps1", "other")
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "other must be pruned: %v", err)
	_, err = getObject(knativeService, "apps1", "hello")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(bystander), &corev1.ConfigMap{})).To(Succeed())

	// A revision that fails is reported unhealthy, with Knative's message.
	head = publish(t, "cells/c1", nil, putApps(cell, hubApp("hello", "ghcr.io/acme/hello:broken")))
	got = waitCS(t, cs, func(g Gomega, got *agentv1alpha1.CellSync) {
		g.Expect(got.Status.LastAppliedRevision).To(HaveSuffix(head))
		c := ready(g, got)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(meta.HealthCheckFailedReason))
		g.Expect(c.Message).To(ContainSubstring("image pull failed"))
	})
	g.Expect(apimeta.IsStatusConditionFalse(got.Status.Conditions, "Healthy")).To(BeTrue())
	g.Eventually(func(g Gomega) {
		rep := statusReport(g, "c1")
		g.Expect(rep.AppliedCommit).To(Equal(head))
		g.Expect(rep.Apps).To(HaveLen(1))
		g.Expect(rep.Apps[0].Ready).To(BeFalse())
		g.Expect(rep.Apps[0].Reason).To(Equal("RevisionFailed"))
		g.Expect(rep.Apps[0].Message).To(ContainSubstring("image pull failed"))
	}, timeout, poll).Should(Succeed())
}

func gitCount(ref string) (string, error) {
	return gitOut("rev-list", "--count", ref)
}

// Drift: a field the agent owns, changed by hand, is restored on the next interval; an
// annotation added by another field manager survives every re-apply.
func TestDriftIsHealedAndOtherManagersKept(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "apps2")
	cell := hubCell("c2", "apps2")
	head := publish(t, "cells/c2", nil, putApps(cell, hubApp("web", "ghcr.io/acme/web:v1")))
	cs := newCellSync(agentNamespace, "c2", "c2", []string{"apps2"})
	create(t, cs)
	waitApplied(t, cs, head)

	svc, err := getObject(knativeService, "apps2", "web")
	g.Expect(err).NotTo(HaveOccurred())
	containers, _, _ := unstructured.NestedSlice(svc.Object, "spec", "template", "spec", "containers")
	containers[0].(map[string]any)["image"] = "ghcr.io/evil/web:hand-edited"
	g.Expect(unstructured.SetNestedSlice(svc.Object, containers, "spec", "template", "spec", "containers")).To(Succeed())
	g.Expect(k8s.Update(ctx, svc, client.FieldOwner("kubectl-edit"))).To(Succeed())
	// Another controller (a cloud controller, say) annotates the Service with its own manager.
	patch := []byte(`{"metadata":{"annotations":{"example.com/owned-by":"someone-else"}}}`)
	g.Expect(k8s.Patch(ctx, svc, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("other-controller"))).To(Succeed())

	g.Eventually(func(g Gomega) {
		live, err := getObject(knativeService, "apps2", "web")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(image(g, live)).To(Equal("ghcr.io/acme/web:v1"), "the agent restores what it owns")
		g.Expect(live.GetAnnotations()).To(HaveKeyWithValue("example.com/owned-by", "someone-else"))
	}, timeout, poll).Should(Succeed())
	// And it stays there across more re-applies, with no write once converged (kwok has reported
	// the healed generation by then, so nothing else writes either).
	var before *unstructured.Unstructured
	g.Eventually(func(g Gomega) {
		live, err := getObject(knativeService, "apps2", "web")
		g.Expect(err).NotTo(HaveOccurred())
		observed, _, _ := unstructured.NestedInt64(live.Object, "status", "observedGeneration")
		g.Expect(observed).To(Equal(live.GetGeneration()))
		before = live
	}, timeout, poll).Should(Succeed())
	requestReconcile(t, cs)
	requestReconcile(t, cs)
	after, err := getObject(knativeService, "apps2", "web")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(after.GetAnnotations()).To(HaveKeyWithValue("example.com/owned-by", "someone-else"))
	g.Expect(after.GetResourceVersion()).To(Equal(before.GetResourceVersion()), "a converged object is not written again")
}

// requestReconcile asks for a reconcile as `flux reconcile` would and waits until it was handled.
func requestReconcile(t *testing.T, cs *agentv1alpha1.CellSync) {
	t.Helper()
	token, err := testenv.RequestReconcile(context.Background(), k8s, cs.DeepCopy())
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	waitCS(t, cs, func(g Gomega, got *agentv1alpha1.CellSync) {
		g.Expect(got.Status.LastHandledReconcileAt).To(Equal(token))
	})
}

// statusRepoName is the status repository TestReportsGoToTheStatusRepository gives its cell.
const statusRepoName = "status-shard-7"

// With spec.statusURL the agent pushes its reports to a status repository of its own (a small
// one, so a push does not pay for every ref of the fleet), and none to the cell branch's.
func TestReportsGoToTheStatusRepository(t *testing.T) {
	g := NewWithT(t)
	newNamespace(t, "apps-status")
	cell := hubCell("c-status", "apps-status")
	head := publish(t, "cells/c-status", nil, putApps(cell, hubApp("hello", "ghcr.io/acme/hello:v1")))
	statusURL, err := gitServer.CreateRepo(statusRepoName)
	g.Expect(err).NotTo(HaveOccurred())
	cs := newCellSync(agentNamespace, "c-status", "c-status", []string{"apps-status"}, func(cs *agentv1alpha1.CellSync) {
		cs.Spec.StatusURL = statusURL
	})
	create(t, cs)
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), cs) })
	waitApplied(t, cs, head)
	g.Eventually(func(g Gomega) {
		out, err := testenv.Git(gitServer.RepoDir(statusRepoName), "show", "status/c-status:status.yaml")
		g.Expect(err).NotTo(HaveOccurred())
		rep := &agentv1alpha1.StatusReport{}
		g.Expect(yaml.Unmarshal([]byte(out), rep)).To(Succeed())
		g.Expect(rep.Cell).To(Equal("c-status"))
		g.Expect(rep.AppliedCommit).To(Equal(head))
	}, timeout, poll).Should(Succeed())
	// Heartbeats keep going there, each an orphan commit, and never to the cell branch's repository.
	g.Eventually(func() (string, error) {
		return testenv.Git(gitServer.RepoDir(statusRepoName), "rev-list", "--count", "status/c-status")
	}, timeout, poll).Should(Equal("1"))
	_, err = gitOut("rev-parse", "--verify", "-q", "refs/heads/status/c-status")
	g.Expect(err).To(HaveOccurred(), "no report may reach the cell branch's repository")
}
