package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentmanager "github.com/cellsync/cellsync/agent/manager"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

// The fault suite breaks one part of a running installation at a time, in the middle of its
// work, and checks that nothing is lost or duplicated (branch commits, member objects' UIDs and
// resourceVersions, hub status) and that progress resumes by itself. The whole world runs with
// the agents' clocks 30 s behind the hub's.

const faultsFile = "apps/faults.yaml"

// faultApps is a placement over the world's cells and, for each name, an app with the image;
// canary apps walk [cell-1 20 %] → [cell-1, cell-2 50 %] → [all 100 %].
func faultApps(images map[string]string, canary map[string]bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: hub.cellsync.io/v1alpha1
kind: CellPlacement
metadata: {name: faults, namespace: %s}
spec:
  cellSelector:
    matchLabels: {cellsync.io/env: demo}
`, testenv.WorldAppsNamespace)
	for _, name := range slices.Sorted(maps.Keys(images)) {
		fmt.Fprintf(&b, `---
apiVersion: hub.cellsync.io/v1alpha1
kind: ServerlessApp
metadata: {name: %s, namespace: %s}
spec:
  placementRef: {name: faults}
  template: {image: %q}
`, name, testenv.WorldAppsNamespace, images[name])
		if canary[name] {
			b.WriteString(testenv.SampleStrategy(5*time.Minute, ""))
		}
	}
	return b.String()
}

// appReadyEverywhere waits until every world member runs the app with the image, Ready, and the
// hub's ServerlessApp is Ready in every cell.
func appReadyEverywhere(t *testing.T, name, img string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		for _, m := range world.Members {
			svc := service(g, m, name)
			g.Expect(svc).NotTo(BeNil(), "no %s in %s", name, m.Name)
			g.Expect(image(svc)).To(Equal(img), "%s in %s", name, m.Name)
			g.Expect(ready(svc)).To(BeTrue(), "%s Ready in %s", name, m.Name)
		}
		app := &hubv1alpha1.ServerlessApp{}
		g.Expect(world.HubClient.Get(context.Background(), client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: name}, app)).To(Succeed())
		g.Expect(app.Status.ReadyCells).To(Equal(len(world.Members)), "app %s: %v", name, app.Status.Conditions)
		g.Expect(apimeta.IsStatusConditionTrue(app.Status.Conditions, meta.ReadyCondition)).To(BeTrue())
	}, timeout, time.Second).Should(Succeed())
}

// objectIDs is each member's UID and resourceVersion of the app's Knative Service.
func objectIDs(g Gomega, name string) map[string][2]string {
	out := map[string][2]string{}
	for _, m := range world.Members {
		svc := service(g, m, name)
		g.Expect(svc).NotTo(BeNil())
		out[m.Name] = [2]string{string(svc.GetUID()), svc.GetResourceVersion()}
	}
	return out
}

// managedBy lists who wrote the app's Service in a member, and when.
func managedBy(g Gomega, m *testenv.Member, name string) []string {
	svc := service(g, m, name)
	g.Expect(svc).NotTo(BeNil())
	var out []string
	for _, f := range svc.GetManagedFields() {
		out = append(out, fmt.Sprintf("%s %s %s %s", f.Manager, f.Operation, f.Subresource, f.Time))
	}
	return out
}

func uids(ids map[string][2]string) map[string]string {
	out := map[string]string{}
	for k, v := range ids {
		out[k] = v[0]
	}
	return out
}

// commitsSince counts the commits a branch got since a commit, and fails on any commit that
// changes nothing (an empty commit is a duplicated write).
func commitsSince(t *testing.T, since, branch string) int {
	t.Helper()
	g := NewWithT(t)
	dir := world.Git.RepoDir(testenv.WorldRepo)
	list, err := testenv.Git(dir, "rev-list", since+".."+branch)
	g.Expect(err).NotTo(HaveOccurred())
	if list == "" {
		return 0
	}
	commits := strings.Split(list, "\n")
	for _, c := range commits {
		tree, err := testenv.Git(dir, "rev-parse", c+"^{tree}")
		g.Expect(err).NotTo(HaveOccurred())
		parent, err := testenv.Git(dir, "rev-parse", c+"^^{tree}")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(tree).NotTo(Equal(parent), "commit %s on %s changes nothing", c, branch)
	}
	return len(commits)
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	images := map[string]string{"api": "ghcr.io/knative/helloworld-go:api-1", "canary": "ghcr.io/knative/helloworld-go:canary-1"}
	canary := map[string]bool{"canary": true}
	push(t, "Add the fault suite's apps", map[string]string{faultsFile: faultApps(images, canary)})
	appReadyEverywhere(t, "api", images["api"])
	appReadyEverywhere(t, "canary", images["canary"])

	for i, how := range []testenv.PushFailure{testenv.DieMidPush, testenv.DieAfterUpdate} {
		name := map[testenv.PushFailure]string{testenv.DieMidPush: "before any ref moved", testenv.DieAfterUpdate: "after the refs moved, before the hub heard"}[how]
		t.Run("the Git server dies in the hub's atomic push "+name, func(t *testing.T) {
			g := NewWithT(t)
			before := cellHeads(t)
			ids := objectIDs(g, "api")
			fired := world.Git.FailNextPush("refs/heads/"+hubv1alpha1.CellBranchPrefix, how, 3*time.Second)
			images["api"] = "ghcr.io/knative/helloworld-go:api-" + strconv.Itoa(i+2)
			push(t, "api "+images["api"], map[string]string{faultsFile: faultApps(images, canary)})
			g.Eventually(fired, timeout).Should(BeClosed(), "the hub pushed to the cell branches")
			appReadyEverywhere(t, "api", images["api"])
			for branch, head := range before {
				g.Expect(commitsSince(t, head, branch)).To(Equal(1), "%s got exactly one commit for the change", branch)
			}
			g.Expect(uids(objectIDs(g, "api"))).To(Equal(uids(ids)), "the Services were updated in place")
		})
	}

	t.Run("a member's kube-apiserver is killed and restarted", func(t *testing.T) {
		g := NewWithT(t)
		m := world.Members[0]
		heads := cellHeads(t)
		// Settled first: the simulated Knative controller may still be writing status.
		var ids map[string]map[string][2]string
		g.Eventually(func(g Gomega) {
			before := map[string]map[string][2]string{"api": objectIDs(g, "api"), "canary": objectIDs(g, "canary")}
			time.Sleep(2 * poll)
			ids = map[string]map[string][2]string{"api": objectIDs(g, "api"), "canary": objectIDs(g, "canary")}
			g.Expect(ids).To(Equal(before))
		}, timeout, time.Second).Should(Succeed())
		managers := managedBy(g, m, "api")
		g.Expect(m.Cluster.RestartAPIServer()).To(Succeed())
		// No branch moves and no member object is written again. The cell may show the restart
		// for a moment (a restarted apiserver can refuse the agent's health reads until its
		// RBAC caches are filled: the agent says so, truthfully), and comes back by itself.
		g.Consistently(func(g Gomega) {
			g.Expect(cellHeads(t)).To(Equal(heads))
			g.Expect(map[string]map[string][2]string{"api": objectIDs(g, "api"), "canary": objectIDs(g, "canary")}).To(Equal(ids),
				"UIDs and resourceVersions in the members are unchanged; api in %s was managed by %v, now by %v", m.Name, managers, managedBy(g, m, "api"))
		}, 4*poll, 500*time.Millisecond).Should(Succeed())
		g.Eventually(func(g Gomega) {
			cell := &hubv1alpha1.Cell{}
			g.Expect(world.HubClient.Get(ctx, client.ObjectKey{Name: m.Cell}, cell)).To(Succeed())
			g.Expect(apimeta.IsStatusConditionTrue(cell.Status.Conditions, meta.ReadyCondition)).To(BeTrue(), "cell %s: %v", m.Cell, cell.Status.Conditions)
		}, timeout, time.Second).Should(Succeed())
		appReadyEverywhere(t, "api", images["api"])
		g.Expect(cellHeads(t)).To(Equal(heads), "the restart cost no commit")
		g.Expect(map[string]map[string][2]string{"api": objectIDs(g, "api"), "canary": objectIDs(g, "canary")}).To(Equal(ids))
		// The next change lands through the restarted apiserver.
		images["api"] = "ghcr.io/knative/helloworld-go:api-after-restart"
		push(t, "api after the apiserver restart", map[string]string{faultsFile: faultApps(images, canary)})
		appReadyEverywhere(t, "api", images["api"])
		g.Expect(uids(objectIDs(g, "api"))).To(Equal(uids(ids["api"])))
	})

	t.Run("the hub restarts while a RolloutStep is being taken", func(t *testing.T) {
		g := NewWithT(t)
		before := cellHeads(t)
		ids := objectIDs(g, "canary")
		// Step 1 touches cell-1 alone; the first push naming cell-2 is step 2. It lands, the hub
		// does not hear it, and the hub restarts while Git is down.
		fired := world.Git.FailNextPush("refs/heads/"+hubv1alpha1.CellBranchPrefix+"cell-2", testenv.DieAfterUpdate, 5*time.Second)
		images["canary"] = "ghcr.io/knative/helloworld-go:canary-2"
		push(t, "canary 2", map[string]string{faultsFile: faultApps(images, canary)})
		seen := map[string]bool{}
		key := client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: "canary"}
		watchSteps := func(g Gomega) *hubv1alpha1.Rollout {
			ro := &hubv1alpha1.Rollout{}
			g.Expect(world.HubClient.Get(ctx, key, ro)).To(Succeed())
			if ro.Status.Phase == hubv1alpha1.PhaseProgressing || ro.Status.Phase == hubv1alpha1.PhasePaused {
				seen[ro.Status.StepDisplay] = true
			}
			return ro
		}
		g.Eventually(func(g Gomega) bool {
			watchSteps(g)
			select {
			case <-fired:
				return true
			default:
				return false
			}
		}, timeout, 100*time.Millisecond).Should(BeTrue(), "step 2 was pushed")
		g.Expect(world.RestartHub()).To(Succeed())
		var ro *hubv1alpha1.Rollout
		g.Eventually(func(g Gomega) {
			ro = watchSteps(g)
			g.Expect(ro.Status.Phase).To(Equal(hubv1alpha1.PhaseCompleted), "rollout: %s %s", ro.Status.StepDisplay, ro.Status.Message)
		}, timeout, 200*time.Millisecond).Should(Succeed())
		appReadyEverywhere(t, "canary", images["canary"])
		g.Expect(seen).To(HaveKey("1/3"))
		g.Expect(seen).To(HaveKey("2/3"), "step 2 was taken, not skipped")
		// The step was taken once: one RolloutStep for step 2 of this revision, Succeeded.
		steps := &hubv1alpha1.RolloutStepList{}
		g.Expect(world.HubClient.List(ctx, steps, client.InNamespace(testenv.WorldAppsNamespace))).To(Succeed())
		var second []hubv1alpha1.RolloutStep
		for _, s := range steps.Items {
			if s.Spec.RolloutRef.Name == "canary" && s.Spec.Revision == ro.Status.StableRevision && s.Spec.Step != nil && *s.Spec.Step == 2 {
				second = append(second, s)
			}
		}
		g.Expect(second).To(HaveLen(1))
		g.Expect(second[0].Status.Phase).To(Equal(hubv1alpha1.StepSucceeded), "step 2: %s", second[0].Status.Message)
		// Nothing duplicated: cell-1 got steps 1, 2 and 3, cell-2 steps 2 and 3, cell-3 step 3.
		want := map[string]int{"cells/cell-1": 3, "cells/cell-2": 2, "cells/cell-3": 1}
		for branch, n := range want {
			g.Expect(commitsSince(t, before[branch], branch)).To(Equal(n), "commits on %s", branch)
		}
		g.Expect(uids(objectIDs(g, "canary"))).To(Equal(uids(ids)), "the Services were updated in place")
	})

	t.Run("an agent is killed in the middle of a staged apply", func(t *testing.T) {
		g := NewWithT(t)
		// A cell of its own whose agent runs as its binary under the shipped RBAC.
		cell := &hubv1alpha1.Cell{
			ObjectMeta: metav1.ObjectMeta{Name: "cell-9", Labels: map[string]string{hubv1alpha1.LabelEnv: "faults"}},
			Spec:       hubv1alpha1.CellSpec{Cluster: "member-9", Namespaces: []string{testenv.WorldCellNamespace}},
		}
		g.Expect(world.HubClient.Create(ctx, cell)).To(Succeed())
		m, err := world.StartMemberProcess("member-9", "cell-9")
		g.Expect(err).NotTo(HaveOccurred())
		t.Cleanup(func() {
			m.Stop()
			_ = world.HubClient.Delete(ctx, cell)
		})
		g.Eventually(func(g Gomega) {
			c := &hubv1alpha1.Cell{}
			g.Expect(world.HubClient.Get(ctx, client.ObjectKeyFromObject(cell), c)).To(Succeed())
			g.Expect(apimeta.FindStatusCondition(c.Status.Conditions, meta.ReadyCondition)).NotTo(BeNil())
			g.Expect(apimeta.FindStatusCondition(c.Status.Conditions, meta.ReadyCondition).Reason).NotTo(Equal(hubv1alpha1.ReasonNoReport))
		}, timeout, time.Second).Should(Succeed())
		// With the agent down, the hub renders sixteen apps into the cell's branch ...
		g.Expect(m.KillAgent()).To(Succeed())
		const apps = 16
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: hub.cellsync.io/v1alpha1\nkind: CellPlacement\nmetadata: {name: solo, namespace: %s}\nspec:\n  cells: [cell-9]\n", testenv.WorldAppsNamespace)
		for i := 1; i <= apps; i++ {
			fmt.Fprintf(&b, "---\napiVersion: hub.cellsync.io/v1alpha1\nkind: ServerlessApp\nmetadata: {name: s%02d, namespace: %s}\nspec:\n  placementRef: {name: solo}\n  template: {image: \"ghcr.io/knative/helloworld-go:s\"}\n",
				i, testenv.WorldAppsNamespace)
		}
		push(t, "Sixteen apps on cell-9", map[string]string{"apps/solo.yaml": b.String()})
		var head string
		g.Eventually(func(g Gomega) {
			heads := cellHeads(t)
			head = heads["cells/cell-9"]
			g.Expect(head).NotTo(BeEmpty())
			out, err := testenv.Git(world.Git.RepoDir(testenv.WorldRepo), "ls-tree", "--name-only", head, testenv.WorldCellNamespace+"/")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(strings.Fields(out)).To(HaveLen(apps))
		}, timeout, time.Second).Should(Succeed())
		// ... then a new agent applies them all in one staged apply and is killed at the first
		// Service it creates.
		wc, err := client.NewWithWatch(m.Cluster.Config, client.Options{Scheme: agentmanager.Scheme()})
		g.Expect(err).NotTo(HaveOccurred())
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(knativeService.GroupVersion().WithKind("ServiceList"))
		w, err := wc.Watch(ctx, list, client.InNamespace(testenv.WorldCellNamespace))
		g.Expect(err).NotTo(HaveOccurred())
		defer w.Stop()
		g.Expect(m.RestartAgent()).To(Succeed())
		select {
		case <-w.ResultChan():
			g.Expect(m.KillAgent()).To(Succeed())
		case <-time.After(timeout):
			t.Fatal("the agent created no Service")
		}
		g.Expect(wc.List(ctx, list, client.InNamespace(testenv.WorldCellNamespace))).To(Succeed())
		partial := map[string]string{}
		for _, u := range list.Items {
			partial[u.GetName()] = string(u.GetUID())
		}
		t.Logf("the agent was killed with %d of %d Services in the member", len(partial), apps)
		g.Expect(len(partial)).To(BeNumerically("<", apps), "killed in the middle of the apply")

		// A new agent on the same data directory finishes the commit and keeps every object.
		g.Expect(m.RestartAgent()).To(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(wc.List(ctx, list, client.InNamespace(testenv.WorldCellNamespace))).To(Succeed())
			g.Expect(list.Items).To(HaveLen(apps))
			for _, u := range list.Items {
				if uid, ok := partial[u.GetName()]; ok {
					g.Expect(string(u.GetUID())).To(Equal(uid), "%s was created again", u.GetName())
				}
				g.Expect(ready(&u)).To(BeTrue(), "%s Ready", u.GetName())
			}
			c := &hubv1alpha1.Cell{}
			g.Expect(world.HubClient.Get(ctx, client.ObjectKeyFromObject(cell), c)).To(Succeed())
			g.Expect(c.Status.LastAppliedCommit).To(Equal(head))
			g.Expect(apimeta.IsStatusConditionTrue(c.Status.Conditions, meta.ReadyCondition)).To(BeTrue(), "cell-9: %v", c.Status.Conditions)
		}, timeout, time.Second).Should(Succeed())
		push(t, "Remove the sixteen apps", map[string]string{"apps/solo.yaml": ""})
	})
}
