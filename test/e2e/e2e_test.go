// Package e2e runs the whole loop with real parts: a hub apiserver with the real hub manager,
// three member apiservers (Knative CRDs, kwok reporting Knative status) each with a real agent,
// and a git http-backend server. It drives everything only through git pushes to main and
// Kubernetes API calls, as a person with git and kubectl would.
package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

var world *testenv.World

const (
	poll    = 2 * time.Second
	timeout = 90 * time.Second
)

func TestMain(m *testing.M) {
	level := zapcore.DPanicLevel // failures are asserted through status; controller logs are noise
	if os.Getenv("CELLSYNC_TEST_VERBOSE") != "" {
		level = zapcore.Level(-4)
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(level)))
	// The agents' clocks run 30 s behind the hub's (more than three times the stale threshold):
	// nothing may depend on the two agreeing.
	w, err := testenv.StartWorld(testenv.WorldOptions{Members: 3, Poll: poll, StaleAfter: 8 * time.Second, AgentClockSkew: -30 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to start the e2e world:", err)
		os.Exit(1)
	}
	world = w
	code := m.Run()
	w.Stop()
	os.Exit(code)
}

var knativeService = schema.GroupVersionKind{Group: "serving.knative.dev", Version: "v1", Kind: "Service"}

// service reads the app's Knative Service in a member cluster (nil when it is not there).
func service(g Gomega, m *testenv.Member, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(knativeService)
	err := m.Client.Get(context.Background(), client.ObjectKey{Namespace: testenv.WorldCellNamespace, Name: name}, u)
	if apierrors.IsNotFound(err) {
		return nil
	}
	g.Expect(err).NotTo(HaveOccurred())
	return u
}

func image(u *unstructured.Unstructured) string {
	cs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
	if len(cs) == 0 {
		return ""
	}
	img, _, _ := unstructured.NestedString(cs[0].(map[string]any), "image")
	return img
}

func ready(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m := c.(map[string]any)
		if m["type"] == "Ready" && m["status"] == "True" {
			return true
		}
	}
	return false
}

func rollout(g Gomega) *hubv1alpha1.Rollout {
	ro := &hubv1alpha1.Rollout{}
	g.Expect(world.HubClient.Get(context.Background(), client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: "web"}, ro)).To(Succeed())
	return ro
}

func cellHeads(t *testing.T) map[string]string {
	t.Helper()
	h, err := world.Git.BranchHeads(testenv.WorldRepo, hubv1alpha1.CellBranchPrefix)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return h
}

// abortedBackTo waits for the rollout to abort, then checks that every cell branch has the tree
// it had in before and that every member runs img again, Ready.
func abortedBackTo(t *testing.T, before map[string]string, img string) {
	t.Helper()
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		ro := rollout(g)
		g.Expect(ro.Status.Phase).To(Equal(hubv1alpha1.PhaseAborted), "rollout: %s %s", ro.Status.StepDisplay, ro.Status.Message)
		g.Expect(ro.Status.Message).To(ContainSubstring("Canary failed: cell-1"))
	}, timeout, time.Second).Should(Succeed())
	backAtTrees(t, before)
	g.Eventually(func(g Gomega) {
		for _, m := range world.Members {
			svc := service(g, m, "web")
			g.Expect(svc).NotTo(BeNil())
			g.Expect(image(svc)).To(Equal(img), "%s runs the previous revision", m.Name)
			g.Expect(ready(svc)).To(BeTrue())
		}
	}, timeout, time.Second).Should(Succeed())
}

// backAtTrees checks that every cell branch has the tree it had at the heads in before.
func backAtTrees(t *testing.T, before map[string]string) {
	t.Helper()
	g := NewWithT(t)
	after := cellHeads(t)
	tree := func(rev string) string {
		out, err := world.Git.RevParse(testenv.WorldRepo, rev+"^{tree}")
		g.Expect(err).NotTo(HaveOccurred())
		return out
	}
	for b, c := range before {
		g.Expect(tree(after[b])).To(Equal(tree(c)), "%s is back at its last-known-good tree", b)
	}
}

func push(t *testing.T, msg string, files map[string]string) string {
	t.Helper()
	c, err := world.Source.Commit(msg, files)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return c
}

// progressingAt waits until the rollout is in progress at step (for example "2/3").
func progressingAt(t *testing.T, step string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		ro := rollout(g)
		g.Expect(ro.Status.StepDisplay).To(Equal(step))
		g.Expect(ro.Status.Phase).To(Equal(hubv1alpha1.PhaseProgressing))
	}, timeout, 200*time.Millisecond).Should(Succeed())
}

// everyCellRuns waits until every member runs the app's Knative Service with the image, Ready,
// and the hub shows the rollout completed with every cell's applied commit.
func everyCellRuns(t *testing.T, img string) *hubv1alpha1.Rollout {
	t.Helper()
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		for _, m := range world.Members {
			svc := service(g, m, "web")
			g.Expect(svc).NotTo(BeNil(), "no Knative Service in %s", m.Name)
			g.Expect(image(svc)).To(Equal(img), "image in %s", m.Name)
			g.Expect(ready(svc)).To(BeTrue(), "Knative Service Ready in %s", m.Name)
		}
	}, timeout, time.Second).Should(Succeed())
	var ro *hubv1alpha1.Rollout
	g.Eventually(func(g Gomega) {
		ro = rollout(g)
		g.Expect(ro.Status.Phase).To(Equal(hubv1alpha1.PhaseCompleted), "rollout: %s", ro.Status.Message)
		g.Expect(ro.Status.CellsDisplay).To(Equal("3/3/3"))
		heads := cellHeads(t)
		for _, m := range world.Members {
			cell := &hubv1alpha1.Cell{}
			g.Expect(world.HubClient.Get(context.Background(), client.ObjectKey{Name: m.Cell}, cell)).To(Succeed())
			g.Expect(cell.Status.LastAppliedCommit).To(Equal(heads["cells/"+m.Cell]), "cell %s applied commit", m.Cell)
			g.Expect(apimeta.IsStatusConditionTrue(cell.Status.Conditions, meta.ReadyCondition)).To(BeTrue())
		}
		for _, c := range ro.Status.Cells {
			g.Expect(c.AppliedCommit).To(Equal(heads["cells/"+c.Cell]), "rollout's cell %s applied commit", c.Cell)
		}
	}, timeout, time.Second).Should(Succeed())
	return ro
}

// hubKinds are every kind the hub serves.
var hubKinds = []string{"Cell", "CellPlacement", "ServerlessApp", "Rollout", "RolloutStep", "AppSource", "AnalysisTemplate"}

// hubObjects lists every hub object as kind/namespace/name → the object.
func hubObjects(g Gomega) map[string]*unstructured.Unstructured {
	out := map[string]*unstructured.Unstructured{}
	for _, kind := range hubKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(hubv1alpha1.GroupVersion.WithKind(kind + "List"))
		g.Expect(world.HubClient.List(context.Background(), list)).To(Succeed())
		for i := range list.Items {
			u := &list.Items[i]
			out[kind+"/"+u.GetNamespace()+"/"+u.GetName()] = u
		}
	}
	return out
}

// quietAtRest samples every hub object and every cell branch head for d while the agents keep
// heartbeating (every second here): with everything converged, nothing may change.
func quietAtRest(t *testing.T, d time.Duration) {
	t.Helper()
	g := NewWithT(t)
	before := hubObjects(g)
	heads := cellHeads(t)
	g.Expect(before).NotTo(BeEmpty())
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Second) {
		now := hubObjects(g)
		g.Expect(cellHeads(t)).To(Equal(heads), "the hub wrote to a cell branch at rest")
		g.Expect(len(now)).To(Equal(len(before)), "hub objects came or went at rest")
		for key, b := range before {
			a := now[key]
			g.Expect(a).NotTo(BeNil(), "%s is gone", key)
			if a.GetResourceVersion() != b.GetResourceVersion() {
				bs, _, _ := unstructured.NestedFieldNoCopy(b.Object, "status")
				as, _, _ := unstructured.NestedFieldNoCopy(a.Object, "status")
				t.Fatalf("%s changed at rest (resourceVersion %s → %s)\nstatus before: %v\nstatus after:  %v", key, b.GetResourceVersion(), a.GetResourceVersion(), bs, as)
			}
		}
	}
	t.Logf("%d hub objects and %d cell branches unchanged over %s of heartbeats", len(before), len(heads), d)
}

// The whole loop, in the order a team would live it.
func TestEndToEnd(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()

	var rev1, rev2 string
	t.Run("git push of an app ships it to every cell", func(t *testing.T) {
		push(t, "Add web", map[string]string{"apps/web.yaml": testenv.SampleApp("ghcr.io/knative/helloworld-go:v1", 5*time.Second)})
		ro := everyCellRuns(t, "ghcr.io/knative/helloworld-go:v1")
		rev1 = ro.Status.StableRevision
		g.Expect(rev1).To(HavePrefix("web-"))
	})

	t.Run("a pushed change walks the canary steps to completion", func(t *testing.T) {
		g := NewWithT(t)
		push(t, "web v2", map[string]string{"apps/web.yaml": testenv.SampleApp("ghcr.io/knative/helloworld-go:v2", 5*time.Second)})
		seen := map[string]bool{}
		g.Eventually(func(g Gomega) {
			ro := rollout(g)
			if ro.Status.Phase == hubv1alpha1.PhaseProgressing || ro.Status.Phase == hubv1alpha1.PhasePaused {
				seen[fmt.Sprintf("%s@%d", ro.Status.StepDisplay, ro.Status.CanaryWeight)] = true
			}
			g.Expect(ro.Status.Phase).To(Equal(hubv1alpha1.PhaseCompleted))
			g.Expect(ro.Status.StableRevision).NotTo(Equal(rev1))
		}, timeout, 200*time.Millisecond).Should(Succeed())
		g.Expect(seen).To(HaveKey("1/3@20"))
		g.Expect(seen).To(HaveKey("2/3@50"))
		ro := everyCellRuns(t, "ghcr.io/knative/helloworld-go:v2")
		rev2 = ro.Status.StableRevision
		steps := &hubv1alpha1.RolloutStepList{}
		g.Expect(world.HubClient.List(ctx, steps, client.InNamespace(testenv.WorldAppsNamespace))).To(Succeed())
		g.Expect(len(steps.Items)).To(BeNumerically(">=", 2), "each advance is a RolloutStep")
	})

	t.Run("at rest, heartbeats change nothing on the hub and nothing in Git", func(t *testing.T) {
		quietAtRest(t, time.Minute)
	})

	t.Run("a failing canary aborts and every cell is back on the previous revision", func(t *testing.T) {
		g := NewWithT(t)
		before := cellHeads(t)
		push(t, "web broken", map[string]string{"apps/web.yaml": testenv.SampleApp("ghcr.io/knative/helloworld-go:broken", 5*time.Second)})
		abortedBackTo(t, before, "ghcr.io/knative/helloworld-go:v2")
		g.Expect(rollout(g).Status.StableRevision).To(Equal(rev2))
	})

	t.Run("invalid YAML on main is reported and changes nothing", func(t *testing.T) {
		g := NewWithT(t)
		before := cellHeads(t)
		app := &hubv1alpha1.ServerlessApp{}
		g.Expect(world.HubClient.Get(ctx, client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: "web"}, app)).To(Succeed())
		bad := push(t, "oops", map[string]string{"apps/oops.yaml": "kind: ServerlessApp\nmetadata: {name: [\n"})
		g.Eventually(func(g Gomega) {
			src := &hubv1alpha1.AppSource{}
			g.Expect(world.HubClient.Get(ctx, client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: "main"}, src)).To(Succeed())
			g.Expect(src.Status.LastAttemptedCommit).To(Equal(bad))
			g.Expect(apimeta.IsStatusConditionTrue(src.Status.Conditions, meta.StalledCondition)).To(BeTrue())
			g.Expect(apimeta.FindStatusCondition(src.Status.Conditions, meta.ReadyCondition).Message).To(ContainSubstring("apps/oops.yaml"))
		}, timeout, time.Second).Should(Succeed())
		g.Consistently(func(g Gomega) {
			g.Expect(cellHeads(t)).To(Equal(before))
			now := &hubv1alpha1.ServerlessApp{}
			g.Expect(world.HubClient.Get(ctx, client.ObjectKeyFromObject(app), now)).To(Succeed())
			g.Expect(now.Generation).To(Equal(app.Generation))
		}, 2*poll, 500*time.Millisecond).Should(Succeed())
		// Fixed by the next push (back to the working v2 spec).
		push(t, "fix", map[string]string{"apps/oops.yaml": "", "apps/web.yaml": testenv.SampleApp("ghcr.io/knative/helloworld-go:v2", 5*time.Second)})
	})

	t.Run("a cell whose agent stopped is Stale and not Ready; a replacement cluster gets its apps back", func(t *testing.T) {
		g := NewWithT(t)
		// The fix pushed above re-renders every cell (new source commit in the metadata) through
		// the canary: let that finish first, or its last step lands on cell-3 during the failover.
		everyCellRuns(t, "ghcr.io/knative/helloworld-go:v2")
		m3 := world.Members[2]
		m3.Stop()
		g.Eventually(func(g Gomega) {
			cell := &hubv1alpha1.Cell{}
			g.Expect(world.HubClient.Get(ctx, client.ObjectKey{Name: m3.Cell}, cell)).To(Succeed())
			g.Expect(apimeta.IsStatusConditionTrue(cell.Status.Conditions, hubv1alpha1.StaleCondition)).To(BeTrue())
			g.Expect(apimeta.IsStatusConditionTrue(cell.Status.Conditions, meta.ReadyCondition)).To(BeFalse())
			app := &hubv1alpha1.ServerlessApp{}
			g.Expect(world.HubClient.Get(ctx, client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: "web"}, app)).To(Succeed())
			g.Expect(app.Status.ReadyCells).To(Equal(2))
		}, timeout, time.Second).Should(Succeed())

		// Disaster recovery: a new, empty cluster with an agent for the same cell. No hub action.
		heads := cellHeads(t)
		replacement, err := world.StartMember("member-3b", m3.Cell)
		g.Expect(err).NotTo(HaveOccurred())
		world.Members[2] = replacement
		everyCellRuns(t, "ghcr.io/knative/helloworld-go:v2")
		g.Expect(cellHeads(t)).To(Equal(heads), "the hub wrote nothing for the failover")
	})

	t.Run("the hub restarts in the middle of rollouts: a good canary completes, a failing one aborts to the last-known-good trees", func(t *testing.T) {
		g := NewWithT(t)
		push(t, "web v5", map[string]string{"apps/web.yaml": testenv.SampleApp("ghcr.io/knative/helloworld-go:v5", 5*time.Second)})
		progressingAt(t, "2/3")
		g.Expect(world.RestartHub()).To(Succeed())
		ro := everyCellRuns(t, "ghcr.io/knative/helloworld-go:v5")
		stable := ro.Status.StableRevision

		before := cellHeads(t)
		push(t, "web broken again", map[string]string{"apps/web.yaml": testenv.SampleApp("ghcr.io/knative/helloworld-go:broken", 5*time.Second)})
		progressingAt(t, "1/3")
		// The new hub has no clone: the last-known-good commit is fetched by its hash.
		g.Expect(world.RestartHub()).To(Succeed())
		abortedBackTo(t, before, "ghcr.io/knative/helloworld-go:v5")
		g.Expect(rollout(g).Status.StableRevision).To(Equal(stable))
	})

	t.Run("the hub's etcd is lost: a new hub rebuilds every object from Git and writes nothing", func(t *testing.T) {
		g := NewWithT(t)
		push(t, "web v6", map[string]string{"apps/web.yaml": testenv.SampleApp("ghcr.io/knative/helloworld-go:v6", 5*time.Second)})
		before := everyCellRuns(t, "ghcr.io/knative/helloworld-go:v6")
		heads := cellHeads(t)
		kinds := map[string]int{}
		for key := range hubObjects(g) {
			kinds[strings.SplitN(key, "/", 2)[0]]++
		}
		type seen struct{ uid, rv string }
		members := func(g Gomega) map[string]seen {
			out := map[string]seen{}
			for _, m := range world.Members {
				svc := service(g, m, "web")
				g.Expect(svc).NotTo(BeNil())
				out[m.Name] = seen{string(svc.GetUID()), svc.GetResourceVersion()}
			}
			return out
		}
		running := members(g)

		g.Expect(world.RebuildHub()).To(Succeed())
		g.Eventually(func(g Gomega) {
			ro := rollout(g)
			g.Expect(ro.Status.Phase).To(Equal(hubv1alpha1.PhaseCompleted), "rollout: %s %s", ro.Status.StepDisplay, ro.Status.Message)
			g.Expect(ro.Status.StableRevision).To(Equal(before.Status.StableRevision))
			g.Expect(ro.Status.CellsDisplay).To(Equal("3/3/3"))
			now := map[string]int{}
			for key := range hubObjects(g) {
				now[strings.SplitN(key, "/", 2)[0]]++
			}
			// RolloutSteps are the history of the lost hub's actions; everything else is back.
			delete(kinds, "RolloutStep")
			delete(now, "RolloutStep")
			g.Expect(now).To(Equal(kinds))
		}, timeout, time.Second).Should(Succeed())
		g.Consistently(func(g Gomega) {
			g.Expect(cellHeads(t)).To(Equal(heads), "the new hub wrote to a cell branch")
			g.Expect(rollout(g).Status.Phase).To(Equal(hubv1alpha1.PhaseCompleted), "the completed rollout started again")
		}, 3*poll, 500*time.Millisecond).Should(Succeed())
		g.Expect(members(g)).To(Equal(running), "the members' objects were not touched")

		// Lost in the middle of a canary: the new hub finds the step from the cell branches.
		push(t, "web v7", map[string]string{"apps/web.yaml": testenv.SampleApp("ghcr.io/knative/helloworld-go:v7", 5*time.Second)})
		progressingAt(t, "2/3")
		mid := cellHeads(t)
		g.Expect(world.RebuildHub()).To(Succeed())
		// It holds, writing nothing, and says what the branches hold and what to do ...
		g.Eventually(func(g Gomega) {
			ro := rollout(g)
			g.Expect(ro.Status.Phase).To(Equal(hubv1alpha1.PhasePaused), "rollout: %s %s", ro.Status.StepDisplay, ro.Status.Message)
			g.Expect(ro.Status.Message).To(ContainSubstring("the cell branches hold a canary in flight"))
			g.Expect(ro.Status.Message).To(ContainSubstring("with a traffic split in cell-1, cell-2"))
			g.Expect(ro.Status.Message).To(ContainSubstring("promote web --full"))
		}, timeout, time.Second).Should(Succeed())
		g.Consistently(func(g Gomega) {
			g.Expect(cellHeads(t)).To(Equal(mid), "the new hub wrote to a cell branch while holding")
			g.Expect(rollout(g).Status.Phase).To(Equal(hubv1alpha1.PhasePaused))
		}, 3*poll, 500*time.Millisecond).Should(Succeed())
		// ... until a person promotes it.
		ro := rollout(g)
		g.Expect(world.HubClient.Create(ctx, &hubv1alpha1.RolloutStep{
			ObjectMeta: metav1.ObjectMeta{Namespace: testenv.WorldAppsNamespace, GenerateName: "web-promote-",
				OwnerReferences: []metav1.OwnerReference{{APIVersion: hubv1alpha1.GroupVersion.String(), Kind: "Rollout", Name: ro.Name, UID: ro.UID}}},
			Spec: hubv1alpha1.RolloutStepSpec{RolloutRef: corev1.LocalObjectReference{Name: "web"}, Action: hubv1alpha1.ActionPromote, Reason: "recovered after losing the hub"},
		})).To(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(rollout(g).Status.Phase).To(Equal(hubv1alpha1.PhaseCompleted))
		}, timeout, time.Second).Should(Succeed())
		everyCellRuns(t, "ghcr.io/knative/helloworld-go:v7")
	})

	t.Run("deleting the app from main prunes it from every cell", func(t *testing.T) {
		g := NewWithT(t)
		placementOnly := strings.SplitN(testenv.SampleApp("x", time.Second), "---\n", 2)[0]
		push(t, "Remove web", map[string]string{"apps/web.yaml": placementOnly})
		g.Eventually(func(g Gomega) {
			for _, m := range world.Members {
				g.Expect(service(g, m, "web")).To(BeNil(), "web still runs in %s", m.Name)
			}
			err := world.HubClient.Get(ctx, client.ObjectKey{Namespace: testenv.WorldAppsNamespace, Name: "web"}, &hubv1alpha1.ServerlessApp{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		}, timeout, time.Second).Should(Succeed())
	})
}
