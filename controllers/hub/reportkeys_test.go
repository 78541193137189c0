package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/fluxcd/pkg/apis/meta"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	. "github.com/onsi/gomega"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/cellsync/cellsync/agent/source"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

// A cell's status can only come from that cell: with spec.reportKeys set, a report pushed
// with another cell's key, or unsigned, is ignored and named on the Cell; the report signed by
// the cell's own key is taken. Reports are pushed with the agent's own PushReport. The key
// rotates as docs/agent.md says: both keys listed, the agent switched, the old key removed.
func TestReportsSignedByAnotherCellAreIgnored(t *testing.T) {
	g := NewWithT(t)
	keyA, err := testenv.NewSigningKey("cell-a")
	g.Expect(err).NotTo(HaveOccurred())
	keyB, err := testenv.NewSigningKey("cell-b")
	g.Expect(err).NotTo(HaveOccurred())
	cell := &hubv1alpha1.Cell{
		ObjectMeta: metav1.ObjectMeta{Name: "signed-a"},
		Spec:       hubv1alpha1.CellSpec{Cluster: "member-a", Namespaces: []string{"apps"}, ReportKeys: []string{keyA.Public}},
	}
	g.Expect(k8s.Create(context.Background(), cell)).To(Succeed())

	push := func(message string, signer *openpgp.Entity) string {
		rep := agentv1alpha1.StatusReport{
			APIVersion: agentv1alpha1.GroupVersion.String(), Kind: agentv1alpha1.StatusReportKind,
			Cell: cell.Name, AgentVersion: "test", HeartbeatTime: metav1.NewTime(time.Now().UTC().Truncate(time.Second)),
			Conditions: []metav1.Condition{{Type: meta.ReadyCondition, Status: metav1.ConditionTrue, Reason: "ReconciliationSucceeded", Message: message}},
		}
		b, err := yaml.Marshal(rep)
		g.Expect(err).NotTo(HaveOccurred())
		commit, err := source.PushReport(context.Background(), repoURL, &githttp.BasicAuth{Username: gitUser, Password: gitPassword},
			agentv1alpha1.StatusRefPrefix+cell.Name, agentv1alpha1.StatusReportFile, b, time.Now(), signer)
		g.Expect(err).NotTo(HaveOccurred())
		return commit
	}
	trusted := func(g Gomega, c *hubv1alpha1.Cell) *metav1.Condition {
		cond := apimeta.FindStatusCondition(c.Status.Conditions, hubv1alpha1.ReportTrustedCondition)
		g.Expect(cond).NotTo(BeNil())
		return cond
	}

	forged := push("forged by cell B", keyB.Entity)
	waitCell(t, cell, func(g Gomega, c *hubv1alpha1.Cell) {
		cond := trusted(g, c)
		g.Expect(cond.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(cond.Reason).To(Equal(hubv1alpha1.ReasonUntrustedReport))
		g.Expect(cond.Message).To(ContainSubstring(forged[:12]))
		ready := apimeta.FindStatusCondition(c.Status.Conditions, meta.ReadyCondition)
		g.Expect(ready.Reason).To(Equal(hubv1alpha1.ReasonNoReport), "the forged report must not count")
		g.Expect(heartbeat(g, cell.Name)).To(BeNil())
	})
	expectEvent(t, cell, "Warning", hubv1alpha1.ReasonUntrustedReport)

	push("signed by cell A", keyA.Entity)
	waitCell(t, cell, func(g Gomega, c *hubv1alpha1.Cell) {
		g.Expect(trusted(g, c).Status).To(Equal(metav1.ConditionTrue))
		ready := apimeta.FindStatusCondition(c.Status.Conditions, meta.ReadyCondition)
		g.Expect(ready.Reason).To(Equal(hubv1alpha1.ReasonAgentReady))
		g.Expect(heartbeat(g, cell.Name)).NotTo(BeNil())
	})
	seen := *heartbeat(g, cell.Name)

	time.Sleep(1100 * time.Millisecond) // a later heartbeat, so a taken report would show
	unsigned := push("unsigned", nil)
	waitCell(t, cell, func(g Gomega, c *hubv1alpha1.Cell) {
		cond := trusted(g, c)
		g.Expect(cond.Reason).To(Equal(hubv1alpha1.ReasonUnsignedReport))
		g.Expect(cond.Message).To(ContainSubstring(unsigned[:12]))
		g.Expect(heartbeat(g, cell.Name)).NotTo(BeNil())
		g.Expect(heartbeat(g, cell.Name).Equal(seen)).To(BeTrue(), "the last trusted report stays in force: %s, want %s", heartbeat(g, cell.Name), seen)
	})

	// Rotation, step 1: the new key joins the old one; reports signed by either are taken.
	keyNew, err := testenv.NewSigningKey("cell-a-2027")
	g.Expect(err).NotTo(HaveOccurred())
	setKeys := func(keys ...string) {
		g.Eventually(func() error {
			c := &hubv1alpha1.Cell{}
			if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(cell), c); err != nil {
				return err
			}
			c.Spec.ReportKeys = keys
			return k8s.Update(context.Background(), c)
		}).Should(Succeed())
	}
	takes := func(message string, signer *openpgp.Entity) {
		t.Helper()
		time.Sleep(1100 * time.Millisecond) // each report a later heartbeat
		push(message, signer)
		waitCell(t, cell, func(g Gomega, c *hubv1alpha1.Cell) {
			g.Expect(trusted(g, c).Status).To(Equal(metav1.ConditionTrue), message)
			g.Expect(heartbeat(g, cell.Name).After(seen)).To(BeTrue(), "%s: the report is taken", message)
			seen = *heartbeat(g, cell.Name)
		})
	}
	setKeys(keyA.Public, keyNew.Public)
	takes("old key while both are listed", keyA.Entity)
	// Step 2: the member's Secret switches to the new key.
	takes("new key while both are listed", keyNew.Entity)
	// Step 3: the old key is removed; a report it signs is no longer taken.
	setKeys(keyNew.Public)
	time.Sleep(1100 * time.Millisecond)
	stale := push("old key after rotation", keyA.Entity)
	waitCell(t, cell, func(g Gomega, c *hubv1alpha1.Cell) {
		cond := trusted(g, c)
		g.Expect(cond.Reason).To(Equal(hubv1alpha1.ReasonUntrustedReport))
		g.Expect(cond.Message).To(ContainSubstring(stale[:12]))
		g.Expect(heartbeat(g, cell.Name).Equal(seen)).To(BeTrue(), "a report signed by the removed key is not taken")
	})
	takes("new key after rotation", keyNew.Entity)
}
