// Benchmarks of the agent against the targets in docs/design.md. Run with `make bench`.
package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cellsync/cellsync/agent/apply"
	"github.com/cellsync/cellsync/agent/manager"
	"github.com/cellsync/cellsync/agent/manifests"
	"github.com/cellsync/cellsync/agent/source"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/cellbranch"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/render"
	"github.com/cellsync/cellsync/test/testenv"

	"github.com/fluxcd/pkg/apis/meta"
)

const benchUser, benchPass = "bench", "bench"

// benchEnv starts a member cluster and a Git server with an empty repository, both stopped when
// the benchmark ends.
func benchEnv(b *testing.B, opts testenv.ClusterOptions) (*testenv.Cluster, client.Client, string) {
	member, err := testenv.StartCluster(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = member.Stop() })
	c, err := client.New(member.Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := testenv.StartGitServer(benchUser, benchPass)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Close)
	url, err := srv.CreateRepo("gitops")
	if err != nil {
		b.Fatal(err)
	}
	return member, c, url
}

// branchWith publishes a cell branch with n Knative apps, as the hub renders them.
func branchWith(b *testing.B, url, cell, ns string, n int) string {
	c := &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: cell}, Spec: hubv1alpha1.CellSpec{Cluster: "m", Namespaces: []string{ns}}}
	store, err := gitstore.New(gitstore.Options{URL: url, Credentials: func(context.Context) (transport.AuthMethod, *openpgp.Entity, error) {
		return &githttp.BasicAuth{Username: benchUser, Password: benchPass}, nil, nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	res, err := store.Apply(context.Background(), gitstore.Update{Message: "bench", Branches: []string{"cells/" + cell}, Edit: func(_ string, files *gitstore.Tree) error {
		for i := range n {
			a := &hubv1alpha1.ServerlessApp{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%03d", i), Namespace: "team"},
				Spec: hubv1alpha1.ServerlessAppSpec{Template: hubv1alpha1.RevisionTemplate{Image: "ghcr.io/acme/app:v1"}}}
			r, err := render.Render(render.Input{App: a, Cell: c})
			if err != nil {
				return err
			}
			if err := cellbranch.PutApp(files, cellbranch.CellMeta{Cell: cell}, cellbranch.AppKey{Namespace: "team", Name: a.Name}, r, ""); err != nil {
				return err
			}
		}
		return nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	return res.Commits["cells/"+cell]
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The agent's poll when nothing changed: one ref listing, no fetch. Target: < 5 ms CPU.
func BenchmarkIdlePoll(b *testing.B) {
	srv, err := testenv.StartGitServer(benchUser, benchPass)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	url, _ := srv.CreateRepo("gitops")
	head := branchWith(b, url, "idle", "apps", 10)
	repo, err := source.Open(filepath.Join(b.TempDir(), "mirror.git"), url, "cells/idle")
	if err != nil {
		b.Fatal(err)
	}
	auth := &githttp.BasicAuth{Username: benchUser, Password: benchPass}
	ctx := context.Background()
	if err := repo.Fetch(ctx, auth, head); err != nil {
		b.Fatal(err)
	}
	before := srv.Requests()
	start := cpuTime()
	for b.Loop() {
		// What the agent does on an idle tick: list the ref, fetch only if the head is new.
		got, err := repo.Head(ctx, auth)
		if err != nil || got != head {
			b.Fatalf("head %s, %v", got, err)
		}
		if err := repo.Fetch(ctx, auth, got); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime() - start
	after := srv.Requests()
	// Counted by the Git server, not assumed.
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "ms-cpu/op")
	b.ReportMetric(float64(after.RefListings-before.RefListings)/float64(b.N), "ref-listings/op")
	b.ReportMetric(float64(after.Fetches-before.Fetches)/float64(b.N), "fetches/op")
	b.ReportMetric(float64(after.BytesIn+after.BytesOut-before.BytesIn-before.BytesOut)/float64(b.N), "wire-bytes/op")
}

// Applying 100 Knative Services to a cell: dry-run all, then server-side apply. Target: < 5 s.
func BenchmarkApply100KnativeServices(b *testing.B) {
	_, c, url := benchEnv(b, testenv.ClusterOptions{Knative: true})
	engine := apply.New(c)
	ctx := context.Background()
	i := 0
	var objs []*unstructured.Unstructured
	for b.Loop() {
		b.StopTimer()
		i++
		ns := fmt.Sprintf("bench-%d", i)
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			b.Fatal(err)
		}
		head := branchWith(b, url, ns, ns, 100)
		repo, err := source.Open(filepath.Join(b.TempDir(), ns+".git"), url, "cells/"+ns)
		if err != nil {
			b.Fatal(err)
		}
		if err := repo.Fetch(ctx, &githttp.BasicAuth{Username: benchUser, Password: benchPass}, head); err != nil {
			b.Fatal(err)
		}
		tree, err := repo.Tree(head)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		objs, err = manifests.Load(tree)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := engine.Apply(ctx, objs, client.ObjectKey{Namespace: "cellsync-system", Name: ns}, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(objs)), "services/op")
}

// The real agent binary applying a hub-rendered branch of 100 Knative Services to a member
// apiserver with kwok, as its default applier ServiceAccount. Reports the time from the CellSync
// being created (the branch listed) to every Service existing, and the process's peak RSS
// (VmHWM) over the apply, the health wait and a few idle polls. Targets: peak RSS < 60 MiB, time
// at most half of Flux kustomize-controller's on the same branch (3.4 s measured here, so 1.7 s).
func BenchmarkAgentRSS100Services(b *testing.B) {
	member, c, url := benchEnv(b, testenv.ClusterOptions{AgentCRDs: true, KwokStages: []string{testenv.KnativeStages()}})
	ctx := context.Background()
	for _, ns := range []string{"cellsync-system", "apps"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			b.Fatal(err)
		}
	}
	if err := testenv.GrantApplier(ctx, member.Config, "cellsync-system", "apps"); err != nil {
		b.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: "cellsync-system"},
		Data: map[string][]byte{"username": []byte(benchUser), "password": []byte(benchPass)}}); err != nil {
		b.Fatal(err)
	}
	head := branchWith(b, url, "rss", "apps", 100)
	agent, err := testenv.StartAgentProcess(member.Kubeconfig, "cellsync-system", b.TempDir(), "--pprof-bind-address="+os.Getenv("CELLSYNC_AGENT_PPROF"))
	if err != nil {
		b.Fatal(err)
	}
	defer agent.Stop()
	time.Sleep(2 * time.Second) // the agent's caches are up before the clock starts
	cs := &agentv1alpha1.CellSync{ObjectMeta: metav1.ObjectMeta{Name: "rss", Namespace: "cellsync-system"}, Spec: agentv1alpha1.CellSyncSpec{
		Cell: "rss", URL: url, SecretRef: &meta.LocalObjectReference{Name: "git"}, Interval: metav1.Duration{Duration: 10 * time.Second},
		Timeout: &metav1.Duration{Duration: 2 * time.Minute}, Prune: true, Policy: agentv1alpha1.Policy{Namespaces: []string{"apps"}},
	}}
	start := time.Now()
	if err := c.Create(ctx, cs); err != nil {
		b.Fatal(err)
	}
	services := &unstructured.UnstructuredList{}
	services.SetAPIVersion("serving.knative.dev/v1")
	services.SetKind("ServiceList")
	var allExist time.Duration
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if allExist == 0 {
			if err := c.List(ctx, services, client.InNamespace("apps")); err == nil && len(services.Items) == 100 {
				allExist = time.Since(start)
			}
		}
		got := &agentv1alpha1.CellSync{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(cs), got); err == nil && allExist > 0 && strings.HasSuffix(got.Status.LastAppliedRevision, head) && isReady(got) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the agent did not apply 100 services within 3 minutes:\n%s", agent.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if hold := os.Getenv("CELLSYNC_BENCH_HOLD"); hold != "" {
		d, _ := time.ParseDuration(hold)
		time.Sleep(d)
	}
	var rss, anon float64
	for b.Loop() {
		// Steady state: a few poll intervals with nothing new.
		time.Sleep(2 * time.Second)
		rss = max(rss, procStatusMiB(b, agent.Cmd.Process.Pid, "VmRSS"))
		anon = max(anon, procStatusMiB(b, agent.Cmd.Process.Pid, "RssAnon"))
	}
	// VmHWM is the peak the target is about. RssAnon is the agent's own memory; the rest is
	// pages of the binary mapped from disk, shared and reclaimable.
	b.ReportMetric(procStatusMiB(b, agent.Cmd.Process.Pid, "VmHWM"), "MiB-peak-rss")
	b.ReportMetric(rss, "MiB-rss")
	b.ReportMetric(anon, "MiB-rss-anon")
	b.ReportMetric(allExist.Seconds(), "s-to-100-services")
}

func isReady(cs *agentv1alpha1.CellSync) bool {
	for _, c := range cs.Status.Conditions {
		if c.Type == meta.ReadyCondition {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

func procStatusMiB(b *testing.B, pid int, field string) float64 {
	v, err := testenv.ProcStatus(pid, field)
	if err != nil {
		b.Fatal(err)
	}
	return float64(v) / (1 << 20)
}
