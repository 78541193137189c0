package agent_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

// Git server stopped: the agent keeps the applied state, reports the fetch failure in a
// condition, and applies the next commit by itself once the server is back.
func TestGitOutageKeepsStateAndRecovers(t *testing.T) {
	g := NewWithT(t)
	newNamespace(t, "apps5")
	cell := hubCell("c5", "apps5")
	first := publish(t, "cells/c5", nil, putApps(cell, hubApp("steady", "ghcr.io/acme/steady:v1")))
	cs := newCellSync(agentNamespace, "c5", "c5", []string{"apps5"})
	create(t, cs)
	waitApplied(t, cs, first)
	before, err := getObject(knativeService, "apps5", "steady")
	g.Expect(err).NotTo(HaveOccurred())

	gitServer.Stop()
	got := waitCS(t, cs, func(g Gomega, got *agentv1alpha1.CellSync) {
		c := ready(g, got)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(agentv1alpha1.ReasonGitOperationFailed))
		g.Expect(c.Message).To(ContainSubstring("keeping commit " + first[:12] + " applied"))
	})
	g.Expect(got.Status.LastAppliedRevision).To(HaveSuffix(first))
	after, err := getObject(knativeService, "apps5", "steady")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(after.GetUID()).To(Equal(before.GetUID()))

	g.Expect(gitServer.Start()).To(Succeed())
	next := publish(t, "cells/c5", nil, putApps(cell, hubApp("steady", "ghcr.io/acme/steady:v2")))
	waitApplied(t, cs, next)
	svc, err := getObject(knativeService, "apps5", "steady")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(image(g, svc)).To(Equal("ghcr.io/acme/steady:v2"))
}

// Agent restarted with nothing new: no object is re-created and resourceVersions stay stable.
func TestRestartWithNothingNewWritesNothing(t *testing.T) {
	g := NewWithT(t)
	const ns = "agent-restart"
	g.Expect(seed(ns)).To(Succeed())
	newNamespace(t, "apps6")
	cell := hubCell("c6", "apps6")
	head := publish(t, "cells/c6", nil, putApps(cell, hubApp("a", "ghcr.io/acme/a:v1"), hubApp("b", "ghcr.io/acme/b:v1")))
	dataDir := t.TempDir()
	stop, err := startAgent(ns, dataDir)
	g.Expect(err).NotTo(HaveOccurred())
	cs := newCellSync(ns, "c6", "c6", []string{"apps6"})
	create(t, cs)
	waitApplied(t, cs, head)

	// Let kwok finish reporting, then take the versions.
	versions := map[string]string{}
	uids := map[string]string{}
	g.Eventually(func(g Gomega) {
		for _, name := range []string{"a", "b"} {
			svc, err := getObject(knativeService, "apps6", name)
			g.Expect(err).NotTo(HaveOccurred())
			c := svcReady(svc)
			g.Expect(c).To(Equal("True"))
			versions[name], uids[name] = svc.GetResourceVersion(), string(svc.GetUID())
		}
	}, timeout, poll).Should(Succeed())
	stop()

	// A new agent process, the same disk: it reconciles (we ask for it) and writes nothing.
	stop, err = startAgent(ns, dataDir)
	g.Expect(err).NotTo(HaveOccurred())
	defer stop()
	requestReconcile(t, cs)
	waitApplied(t, cs, head)
	for _, name := range []string{"a", "b"} {
		svc, err := getObject(knativeService, "apps6", name)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(svc.GetUID())).To(Equal(uids[name]), "%s was re-created", name)
		g.Expect(svc.GetResourceVersion()).To(Equal(versions[name]), "%s was written again", name)
	}
}

// With serviceAccountName set, the agent applies as that service account: one without rights
// gets nothing applied, and the refusal names it.
func TestImpersonation(t *testing.T) {
	newNamespace(t, "apps7")
	cell := hubCell("c7", "apps7")
	head := publish(t, "cells/c7", nil, putApps(cell, hubApp("limited", "ghcr.io/acme/limited:v1")))
	cs := newCellSync(agentNamespace, "c7", "c7", []string{"apps7"}, func(cs *agentv1alpha1.CellSync) {
		cs.Spec.ServiceAccountName = "no-rights"
	})
	create(t, cs)
	got := waitRefused(t, cs, head, agentv1alpha1.ReasonDryRunFailed, true, "system:serviceaccount:agent-system:no-rights")
	NewWithT(t).Expect(ready(NewWithT(t), got).Message).To(ContainSubstring("forbidden"))
	_, err := getObject(knativeService, "apps7", "limited")
	NewWithT(t).Expect(err).To(HaveOccurred())
}

// A commit that cannot be had within --commit-deadline (here the Git server stalls every fetch)
// is given up at the deadline with a message that names it, the last good commit stays applied,
// and the commit applies by itself once the server answers again.
func TestCommitDeadline(t *testing.T) {
	g := NewWithT(t)
	const ns, cell = "agent-deadline", "slow"
	g.Expect(seed(ns)).To(Succeed())
	newNamespace(t, "apps-slow")
	hubcell := hubCell(cell, "apps-slow")
	first := publish(t, "cells/"+cell, nil, putApps(hubcell, hubApp("slow", "ghcr.io/acme/slow:v1")))

	// A proxy in front of the Git server that, when told to, holds fetches until the client
	// hangs up (ref listings still answer, so the agent sees the new head).
	target, err := url.Parse(repoURL)
	g.Expect(err).NotTo(HaveOccurred())
	var stall atomic.Bool
	var cut atomic.Int64
	upstream := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // then the server notices a client hanging up
		r.Body = io.NopCloser(bytes.NewReader(body))
		listing := bytes.Contains(body, []byte("command=ls-refs"))
		if stall.Load() && strings.HasSuffix(r.URL.Path, "/git-upload-pack") && !listing {
			select {
			case <-r.Context().Done():
				cut.Add(1)
			case <-time.After(time.Minute):
			}
			return
		}
		upstream.ServeHTTP(w, r)
	}))
	defer proxy.Close()

	proc, err := testenv.StartAgentProcess(member.Kubeconfig, ns, t.TempDir(), "--commit-deadline=3s")
	g.Expect(err).NotTo(HaveOccurred())
	defer proc.Stop()
	defer func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", tail(proc.Output(), 4000))
		}
	}()
	cs := newCellSync(ns, cell, cell, []string{"apps-slow"}, func(cs *agentv1alpha1.CellSync) {
		cs.Spec.URL = proxy.URL + target.Path
	})
	create(t, cs)
	waitApplied(t, cs, first)
	before, err := getObject(knativeService, "apps-slow", "slow")
	g.Expect(err).NotTo(HaveOccurred())

	stall.Store(true)
	next := publish(t, "cells/"+cell, nil, putApps(hubcell, hubApp("slow", "ghcr.io/acme/slow:v2")))
	got := waitCS(t, cs, func(g Gomega, got *agentv1alpha1.CellSync) {
		c := ready(g, got)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(agentv1alpha1.ReasonGitOperationFailed))
		g.Expect(c.Message).To(ContainSubstring("The commit deadline of 3s (--commit-deadline) passed"))
		g.Expect(c.Message).To(ContainSubstring("keeping commit " + first[:12] + " applied"))
		g.Expect(got.Status.LastAttemptedRevision).To(HaveSuffix(next))
	})
	g.Expect(got.Status.LastAppliedRevision).To(HaveSuffix(first))
	g.Expect(cut.Load()).To(BeNumerically(">=", 1), "the agent hung up on the stalled fetch")
	after, err := getObject(knativeService, "apps-slow", "slow")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(after.GetResourceVersion()).To(Equal(before.GetResourceVersion()))

	stall.Store(false)
	waitApplied(t, cs, next)
	svc, err := getObject(knativeService, "apps-slow", "slow")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(image(g, svc)).To(Equal("ghcr.io/acme/slow:v2"))
}
