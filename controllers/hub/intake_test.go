package hub_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cellsync/cellsync/agent/manager"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/gitauth"
	hubcontrollers "github.com/cellsync/cellsync/controllers/hub"
	"github.com/cellsync/cellsync/test/testenv"
)

// A real agent in a member cluster reports through Git; the hub sees it: the Cell's heartbeat
// and applied commit update and the app's per-cell summary fills in. Once the agent stops, the
// Cell turns Stale after the threshold and no longer counts as Ready.
func TestHubSeesAgentReports(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()

	member, err := testenv.StartCluster(testenv.ClusterOptions{AgentCRDs: true, KwokStages: []string{testenv.KnativeStages()}})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { _ = member.Stop() }()
	mc, err := client.New(member.Config, client.Options{Scheme: manager.Scheme()})
	g.Expect(err).NotTo(HaveOccurred())
	for _, ns := range []string{"cellsync-system", "apps"} {
		g.Expect(mc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	}
	g.Expect(mc.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: "cellsync-system"},
		Data: map[string][]byte{gitauth.SecretUsername: []byte(gitUser), gitauth.SecretPassword: []byte(gitPassword)}})).To(Succeed())

	g.Expect(testenv.GrantApplier(ctx, member.Config, "cellsync-system", "apps")).To(Succeed())

	newNamespace(t, "intake", "")
	cell := newCell(t, "s-1", "member-s", nil)
	app := newApp("intake", "reported", "p", "ghcr.io/acme/reported:v1")
	create(t, newPlacement("intake", "p", hubv1alpha1.CellPlacementSpec{Cells: []string{"s-1"}}), app)
	waitReady(t, app)

	// Before any report: the cell is not Ready, and says why; the rollout is under way.
	waitCell(t, cell, func(g Gomega, c *hubv1alpha1.Cell) {
		g.Expect(apimeta.FindStatusCondition(c.Status.Conditions, meta.ReadyCondition).Reason).To(Equal(hubv1alpha1.ReasonNoReport))
	})
	before := waitReady(t, app)
	revision := before.Status.Revision
	// Rendered but ready nowhere: on its way, never Ready.
	beforeReady := apimeta.FindStatusCondition(before.Status.Conditions, meta.ReadyCondition)
	g.Expect(beforeReady.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(beforeReady.Reason).To(Equal(hubv1alpha1.ReasonWaitingForCells))
	g.Expect(beforeReady.Message).To(ContainSubstring("ready in 0"))
	ro := &hubv1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "intake", Name: "reported"}}
	waitRollout(t, ro, func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.OwnerReferences).To(HaveLen(1), "owned by the app")
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhaseProgressing))
		g.Expect(r.Status.CanaryRevision).To(Equal(revision))
	})
	g.Expect(getRollouts(t, "intake")).To(MatchRegexp(`(?m)^reported\s+reported\s+1/1\s+Progressing\s+100\s+0/0/1\s+` + revision + `\s+`))

	stop, err := testenv.StartAgent(member.Config, "cellsync-system", "")
	g.Expect(err).NotTo(HaveOccurred())
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	g.Expect(mc.Create(ctx, &agentv1alpha1.CellSync{
		ObjectMeta: metav1.ObjectMeta{Name: "s-1", Namespace: "cellsync-system"},
		Spec: agentv1alpha1.CellSyncSpec{
			Cell: "s-1", URL: repoURL, SecretRef: &meta.LocalObjectReference{Name: "git"},
			Interval: metav1.Duration{Duration: 2 * time.Second}, HeartbeatInterval: &metav1.Duration{Duration: time.Second},
			Timeout: &metav1.Duration{Duration: 15 * time.Second}, Prune: true,
			Policy: agentv1alpha1.Policy{Namespaces: []string{"apps"}},
		},
	})).To(Succeed())

	head := heads(t)["cells/s-1"]
	got := waitCell(t, cell, func(g Gomega, c *hubv1alpha1.Cell) {
		g.Expect(c.Status.LastAppliedCommit).To(Equal(head))
		g.Expect(heartbeat(g, "s-1")).NotTo(BeNil())
		g.Expect(apimeta.IsStatusConditionTrue(c.Status.Conditions, meta.ReadyCondition)).To(BeTrue())
		g.Expect(apimeta.IsStatusConditionFalse(c.Status.Conditions, hubv1alpha1.StaleCondition)).To(BeTrue())
	})
	first := *heartbeat(g, "s-1")
	waitFor(t, app, func(g Gomega, a *hubv1alpha1.ServerlessApp) {
		g.Expect(a.Status.ReadyCells).To(Equal(1))
		g.Expect(a.Status.CellStatuses).To(HaveLen(1))
		g.Expect(a.Status.CellStatuses[0].Cell).To(Equal("s-1"))
		g.Expect(a.Status.CellStatuses[0].Ready).To(BeTrue())
		g.Expect(a.Status.CellStatuses[0].Revision).To(HavePrefix("reported-"))
		// Ready in its one cell: Ready, and the message says so.
		ready := apimeta.FindStatusCondition(a.Status.Conditions, meta.ReadyCondition)
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(ready.Message).To(ContainSubstring("ready in 1"))
		g.Expect(apimeta.FindStatusCondition(a.Status.Conditions, meta.ReconcilingCondition)).To(BeNil())
	})
	// The rollout completed: kubectl shows it with the revision as stable.
	waitRollout(t, ro, func(g Gomega, r *hubv1alpha1.Rollout) {
		g.Expect(r.Status.Phase).To(Equal(hubv1alpha1.PhaseCompleted))
		g.Expect(r.Status.StableRevision).To(Equal(revision))
	})
	out := getRollouts(t, "intake")
	g.Expect(out).To(MatchRegexp(`(?m)^NAME\s+APP\s+STEP\s+PHASE\s+CANARY%\s+CELLS\s+ANALYSIS\s+STABLE\s+CANARY\s+AGE$`))
	g.Expect(out).To(MatchRegexp(`(?m)^reported\s+reported\s+1/1\s+Completed\s+0\s+1/1/1\s+` + revision + `\s+\S+$`))

	// The plugin, run as `kubectl cells`, shows the same, and each cell's part.
	out = kubectlCells(t, "get", "rollouts", "-n", "intake")
	g.Expect(out).To(MatchRegexp(`(?m)^reported\s+reported\s+1/1\s+Completed\s+0\s+1/1/1\s+-\s+` + revision + `\s+-\s+\S+$`))
	out = kubectlCells(t, "status", "reported", "-n", "intake")
	g.Expect(out).To(ContainSubstring("revision " + revision + "  rollout Completed 1/1  ready in 1 of 1 cells"))
	g.Expect(out).To(MatchRegexp(`(?m)^CELL\s+CLUSTER\s+REVISION\s+TRAFFIC\s+READY\s+HEARTBEAT\s+MESSAGE$`))
	g.Expect(out).To(MatchRegexp(`(?m)^s-1\s+member-s\s+` + revision + `\s+` + revision + `=100\s+true\s+\d+s ago\s+-$`))

	// Heartbeats keep coming while the agent runs, renewing the cell's Lease, not its status.
	rv := got.ResourceVersion
	g.Eventually(func(g Gomega) {
		g.Expect(*heartbeat(g, "s-1")).To(BeTemporally(">", first))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(cell), got)).To(Succeed())
	g.Expect(got.ResourceVersion).To(Equal(rv), "a heartbeat alone does not change the Cell")

	// The agent stops: after the threshold the cell is Stale and not Ready; so is the app there.
	stop()
	stopped = true
	got = waitCell(t, cell, func(g Gomega, c *hubv1alpha1.Cell) {
		g.Expect(apimeta.IsStatusConditionTrue(c.Status.Conditions, hubv1alpha1.StaleCondition)).To(BeTrue())
		ready := apimeta.FindStatusCondition(c.Status.Conditions, meta.ReadyCondition)
		g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(ready.Reason).To(Equal(hubv1alpha1.ReasonStale))
	})
	g.Expect(time.Since(*heartbeat(g, "s-1"))).To(BeNumerically(">=", staleAfter))
	waitFor(t, app, func(g Gomega, a *hubv1alpha1.ServerlessApp) {
		g.Expect(a.Status.ReadyCells).To(Equal(0))
		g.Expect(a.Status.CellStatuses[0].Message).To(ContainSubstring("No heartbeat since"))
	})
}

// heartbeat is when the hub last saw a new heartbeat of the cell (its Lease's renewTime), nil
// before the first.
func heartbeat(g Gomega, cell string) *time.Time {
	l := &coordinationv1.Lease{}
	err := k8s.Get(context.Background(), client.ObjectKey{Namespace: hubNamespace, Name: hubcontrollers.LeaseName(cell)}, l)
	if apierrors.IsNotFound(err) {
		return nil
	}
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(l.Labels).To(HaveKeyWithValue(hubv1alpha1.HeartbeatLeaseLabel, cell))
	g.Expect(l.Spec.RenewTime).NotTo(BeNil())
	return &l.Spec.RenewTime.Time
}

func waitCell(t *testing.T, cell *hubv1alpha1.Cell, cond func(g Gomega, c *hubv1alpha1.Cell)) *hubv1alpha1.Cell {
	t.Helper()
	return testenv.WaitFor(t, k8s, cell, func(c *hubv1alpha1.Cell) int64 { return c.Status.ObservedGeneration }, cond)
}

func waitRollout(t *testing.T, ro *hubv1alpha1.Rollout, cond func(g Gomega, r *hubv1alpha1.Rollout)) *hubv1alpha1.Rollout {
	t.Helper()
	return testenv.WaitFor(t, k8s, ro, func(r *hubv1alpha1.Rollout) int64 { return r.Status.ObservedGeneration }, cond)
}

// getRollouts runs the real kubectl against the hub, as a person would.
func getRollouts(t *testing.T, ns string) string {
	t.Helper()
	out, err := exec.Command("kubectl", "--kubeconfig", hubCluster.Kubeconfig, "get", "rollouts.hub.cellsync.io", "-n", ns).CombinedOutput()
	NewWithT(t).Expect(err).NotTo(HaveOccurred(), string(out))
	return string(out)
}

// kubectlCells runs the plugin through kubectl's plugin mechanism: the binary on PATH, invoked
// as `kubectl cells`.
func kubectlCells(t *testing.T, args ...string) string {
	t.Helper()
	g := NewWithT(t)
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "kubectl-cells"), "./hub/cmd/kubectl-cells")
	build.Dir = testenv.RepoRoot()
	out, err := build.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))
	cmd := exec.Command("kubectl", append([]string{"cells"}, append(args, "--kubeconfig", hubCluster.Kubeconfig)...)...)
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err = cmd.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))
	return string(out)
}
