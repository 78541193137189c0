package install

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentmanager "github.com/cellsync/cellsync/agent/manager"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/gitauth"
	hubmanager "github.com/cellsync/cellsync/hub/manager"
	"github.com/cellsync/cellsync/test/testenv"
)

const (
	systemNS = "cellsync-system"
	appsNS   = "shop"
	cellNS   = "apps"
)

// usedElsewhere are the grants of the shipped roles that the install run below does not reach,
// each with the code path that needs it. Everything else a role grants must be used in the run.
var usedElsewhere = map[string]map[grant]string{
	"hub": {
		{"hub.cellsync.io", "serverlessapps/finalizers", "update"}: "an app owns its Rollout with blockOwnerDeletion; clusters with the OwnerReferencesPermissionEnforcement admission plugin check this verb (envtest does not run it)",
		{"hub.cellsync.io", "rollouts/finalizers", "update"}:       "a Rollout owns its RolloutSteps with blockOwnerDeletion (rollout_canary.go), checked as above",
		{"hub.cellsync.io", "rolloutsteps", "create"}:              "automatic canary advances (rollout_canary.go); the sample app here has no canary",
		{"hub.cellsync.io", "rolloutsteps", "delete"}:              "old RolloutSteps are deleted as a rollout finishes (rollout_controller.go)",
		{"hub.cellsync.io", "rolloutsteps", "get"}:                 "a RolloutStep is read past the cache before it is acted on (rollout_controller.go)",
		{"hub.cellsync.io", "rollouts", "get"}:                     "a canary rollout is read past the cache (rollout_controller.go)",
		{"hub.cellsync.io", "rolloutsteps/status", "patch"}:        "RolloutStep status is written when a step is acted on",
		{"hub.cellsync.io", "cells", "create"}:                     "an AppSource with kinds [Cell] creates Cells from Git",
		{"hub.cellsync.io", "cells", "delete"}:                     "an AppSource prunes a Cell removed from Git",
		{"hub.cellsync.io", "cells", "get"}:                        "an AppSource reads a Cell past the cache before applying it",
		{"hub.cellsync.io", "cells", "patch"}:                      "an AppSource applies Cells from Git",
		{"", "events", "patch"}:                                    "a repeated event is patched into the first (client-go's event aggregation)",
		{"hub.cellsync.io", "analysistemplates", "create"}:         "an AppSource creates AnalysisTemplates from Git (the sample app here has none)",
		{"hub.cellsync.io", "analysistemplates", "delete"}:         "an AppSource prunes an AnalysisTemplate removed from Git",
		{"hub.cellsync.io", "analysistemplates", "get"}:            "an AppSource reads an AnalysisTemplate past the cache before applying it",
		{"hub.cellsync.io", "analysistemplates", "patch"}:          "an AppSource applies AnalysisTemplates from Git",
	},
	"agent": {
		{"", "events", "patch"}: "a repeated event is patched into the first (client-go's event aggregation)",
	},
}

// The charts as a user installs them: rendered with helm, server-side applied into a hub and a
// member apiserver, the Git Secrets created as the README says, and the real images run with
// podman as the kubelet would run the Deployments, each with a token of its own shipped
// ServiceAccount. The sample app reaches the member and its status reaches the hub; no request
// is forbidden; every grant of the shipped roles is used, and every request they made is
// granted (the apiservers' audit logs show both).
func TestInstallAsShipped(t *testing.T) {
	inContainers := images(t)
	if inContainers {
		t.Log("running the hub and the agent as podman containers of the images make images built")
	} else {
		t.Log("no container runtime here: running the hub and agent binaries as processes, with the same tokens and args")
	}
	ctx := context.Background()
	dir := t.TempDir()
	hubAudit, memberAudit := filepath.Join(dir, "hub-audit.log"), filepath.Join(dir, "member-audit.log")
	git, repoURL, hub, member := startParts(t, hubAudit, memberAudit)

	// helm install cellsync-hub charts/cellsync-hub -n cellsync-system --create-namespace ...
	hubProbe, _ := testenv.FreePort()
	hubObjs := render(t, "cellsync-hub", "cellsync-hub", systemNS,
		"git.url="+repoURL, "statusInterval=2s", "staleAfter=30s", "resyncInterval=10m",
		"metrics.port=0", fmt.Sprintf("probes.port=%d", hubProbe))
	hubAdmin := install(t, hub.Config, hubObjs, hubmanager.Scheme())
	// kubectl -n cellsync-system create secret generic cellsync-git --from-literal=username=...
	createGitSecret(t, hubAdmin)

	// helm install cellsync-agent charts/cellsync-agent -n cellsync-system --create-namespace
	//   --set git.url=... --set cells[0].name=cell-1 --set cells[0].namespaces={apps}
	agentProbe, _ := testenv.FreePort()
	memberAdmin, err := client.New(member.Config, client.Options{Scheme: agentmanager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := memberAdmin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cellNS}}); err != nil {
		t.Fatal(err)
	}
	agentObjs := render(t, "cellsync-agent", "cellsync-agent", systemNS,
		"git.url="+repoURL, "cells[0].name=cell-1", "cells[0].namespaces={"+cellNS+"}",
		"cells[0].interval=2s", "cells[0].heartbeatInterval=1s",
		"metrics.port=0", fmt.Sprintf("probes.port=%d", agentProbe))
	memberAdmin = install(t, member.Config, agentObjs, agentmanager.Scheme())
	createGitSecret(t, memberAdmin)

	hubWL := run(t, hub.Config, hubObjs, "cellsync-hub", "hub", "./hub/cmd/hub", inContainers, dir)
	defer hubWL.Stop()
	agentWL := run(t, member.Config, agentObjs, "cellsync-agent", "agent", "./agent/cmd/agent", inContainers, dir)
	defer agentWL.Stop()

	// On the hub, as the README says: the Cell, an AppSource for main, and the app pushed to it.
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appsNS}},
		&hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: "cell-1", Labels: map[string]string{hubv1alpha1.LabelEnv: "demo"}},
			Spec: hubv1alpha1.CellSpec{Cluster: "member-1", Namespaces: []string{cellNS}}},
	} {
		if err := hubAdmin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	src := shipApp(t, hubAdmin, git, dir)

	alive := func() {
		t.Helper()
		for _, w := range []*testenv.Workload{hubWL, agentWL} {
			if w.Exited() {
				t.Fatalf("%s exited:\n%s", w.Name, w.Output())
			}
		}
	}
	// The app reaches the member...
	svc := &unstructured.Unstructured{}
	svc.SetAPIVersion("serving.knative.dev/v1")
	svc.SetKind("Service")
	waitUntil(t, 3*time.Minute, alive, func() bool {
		return memberAdmin.Get(ctx, client.ObjectKey{Namespace: cellNS, Name: "web"}, svc) == nil
	}, func() string { return "the Knative Service web never reached the member\n" + logs(hubWL, agentWL) })
	// ...and its status reaches the hub.
	sa := &hubv1alpha1.ServerlessApp{}
	waitUntil(t, 3*time.Minute, alive, func() bool {
		if err := hubAdmin.Get(ctx, client.ObjectKey{Namespace: appsNS, Name: "web"}, sa); err != nil {
			return false
		}
		return sa.Status.ReadyCells == 1 && sa.Status.CellCount == 1
	}, func() string {
		return fmt.Sprintf("the hub never saw web ready in cell-1: %+v\n%s", sa.Status, logs(hubWL, agentWL))
	})
	cell := &hubv1alpha1.Cell{}
	if err := hubAdmin.Get(ctx, client.ObjectKey{Name: "cell-1"}, cell); err != nil {
		t.Fatal(err)
	}
	t.Logf("cell-1 on the hub: %s", conditionSummary(cell.Status.Conditions))
	// Let the leases renew and a few heartbeats pass, then take the prune path: the app leaves
	// main, the hub deletes it, and the agent prunes it from the member.
	if _, err := src.Commit("Remove web", map[string]string{"apps/web.yaml": ""}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 3*time.Minute, alive, func() bool {
		err := memberAdmin.Get(ctx, client.ObjectKey{Namespace: cellNS, Name: "web"}, svc)
		return client.IgnoreNotFound(err) == nil && err != nil
	}, func() string { return "web was never pruned from the member\n" + logs(hubWL, agentWL) })

	hubWL.Stop()
	agentWL.Stop()

	// Nothing was forbidden: not in the logs, not in any event, not in the audit logs.
	for _, w := range []*testenv.Workload{hubWL, agentWL} {
		if strings.Contains(strings.ToLower(w.Output()), "forbidden") {
			t.Errorf("%s logged a forbidden request:\n%s", w.Name, grepLines(w.Output(), "forbidden"))
		}
	}
	for name, c := range map[string]client.Client{"hub": hubAdmin, "member": memberAdmin} {
		events := &corev1.EventList{}
		if err := c.List(ctx, events); err != nil {
			t.Fatal(err)
		}
		for _, e := range events.Items {
			if strings.Contains(strings.ToLower(e.Message), "forbidden") {
				t.Errorf("%s event %s/%s: %s", name, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message)
			}
		}
	}
	// Least privilege, measured: what each ServiceAccount asked, from the audit logs.
	checkPrivileges(t, "hub", readAudit(t, hubAudit, "system:serviceaccount:"+systemNS+":cellsync-hub"), hubObjs, "cellsync-hub")
	agentUse := readAudit(t, memberAudit, "system:serviceaccount:"+systemNS+":cellsync-agent")
	checkPrivileges(t, "agent", agentUse, agentObjs, "cellsync-agent")
	if agentUse.impersonated["system:serviceaccount:"+systemNS+":cell-cell-1"] == 0 {
		t.Errorf("the agent never impersonated cell-1's ServiceAccount: it applied as %v", agentUse.impersonated)
	}
	for who := range agentUse.impersonated {
		if who != "system:serviceaccount:"+systemNS+":cell-cell-1" {
			t.Errorf("the agent impersonated %s", who)
		}
	}
}

// app is the sample app without a canary: one cell here.
var app = testenv.PlainApp("ghcr.io/knative/helloworld-go:v1")

// shipApp does what the README says to ship apps: an AppSource for main, and the sample app
// pushed to it with git. It returns the clone of main.
func shipApp(t *testing.T, hub client.Client, git *testenv.GitServer, dir string) *testenv.Workdir {
	t.Helper()
	if err := hub.Create(context.Background(), &hubv1alpha1.AppSource{ObjectMeta: metav1.ObjectMeta{Namespace: appsNS, Name: "main"},
		Spec: hubv1alpha1.AppSourceSpec{Branch: "main", Path: "apps", Interval: metav1.Duration{Duration: 2 * time.Second}, Prune: true}}); err != nil {
		t.Fatal(err)
	}
	src, err := testenv.CloneSource(git.AuthURL("gitops"), filepath.Join(dir, "source"), "main")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Commit("Add web", map[string]string{"apps/web.yaml": app}); err != nil {
		t.Fatal(err)
	}
	return src
}

// startParts starts a Git server with an empty repository, a hub apiserver and a member
// apiserver (Knative CRDs, kwok), with audit logs where paths are given; t's cleanup stops them.
func startParts(t *testing.T, hubAudit, memberAudit string) (*testenv.GitServer, string, *testenv.Cluster, *testenv.Cluster) {
	t.Helper()
	git, err := testenv.StartGitServer(testenv.WorldGitUser, testenv.WorldGitPassword)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(git.Close)
	repoURL, err := git.CreateRepo("gitops")
	if err != nil {
		t.Fatal(err)
	}
	hub, err := testenv.StartCluster(testenv.ClusterOptions{AuditLog: hubAudit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Stop() })
	member, err := testenv.StartCluster(testenv.ClusterOptions{KwokStages: []string{testenv.KnativeStages()}, AuditLog: memberAudit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = member.Stop() })
	return git, repoURL, hub, member
}

// install server-side applies rendered chart objects as cluster admin (helm install) and
// returns an admin client.
func install(t *testing.T, cfg *rest.Config, objs []*unstructured.Unstructured, scheme *runtime.Scheme) client.Client {
	t.Helper()
	ctx := context.Background()
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": systemNS}}}
	if err := testenv.ApplyManifests(ctx, c, append([]*unstructured.Unstructured{ns}, objs...), false); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return admin
}

func createGitSecret(t *testing.T, c client.Client) {
	t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: systemNS, Name: "cellsync-git"},
		Data:       map[string][]byte{gitauth.SecretUsername: []byte(testenv.WorldGitUser), gitauth.SecretPassword: []byte(testenv.WorldGitPassword)},
	}
	if err := c.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// run starts a rendered Deployment's container as its ServiceAccount.
func run(t *testing.T, cfg *rest.Config, objs []*unstructured.Unstructured, deployment, imageName, pkg string, inContainers bool, dir string) *testenv.Workload {
	t.Helper()
	d := convert(t, find(objs, "Deployment", deployment), &appsv1.Deployment{})
	token, err := testenv.MintToken(context.Background(), cfg, d.Namespace, d.Spec.Template.Spec.ServiceAccountName)
	if err != nil {
		t.Fatal(err)
	}
	var img, bin string
	if inContainers {
		img = image(t, imageName)
	} else if bin, err = testenv.Binary(pkg); err != nil {
		t.Fatal(err)
	}
	w, err := testenv.RunDeployment(d, cfg, token, img, bin, dir)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// checkPrivileges compares what a ServiceAccount used with what the roles bound to it grant.
func checkPrivileges(t *testing.T, who string, u usage, objs []*unstructured.Unstructured, sa string) {
	t.Helper()
	if len(u.forbidden) > 0 {
		t.Errorf("%s: %d requests were forbidden, first: %v", who, len(u.forbidden), u.forbidden[:min(5, len(u.forbidden))])
	}
	grants := map[grant]bool{}
	for _, b := range objs {
		if b.GetKind() != "RoleBinding" && b.GetKind() != "ClusterRoleBinding" {
			continue
		}
		rb := convert(t, b, &rbacv1.RoleBinding{})
		bound := false
		for _, s := range rb.Subjects {
			bound = bound || (s.Kind == "ServiceAccount" && s.Name == sa)
		}
		if !bound {
			continue
		}
		role := find(objs, rb.RoleRef.Kind, rb.RoleRef.Name)
		if role == nil {
			t.Fatalf("%s: %s %s binds %s %s, which the chart does not ship", who, b.GetKind(), b.GetName(), rb.RoleRef.Kind, rb.RoleRef.Name)
		}
		for g := range granted(convert(t, role, &rbacv1.ClusterRole{}).Rules) {
			grants[g] = true
		}
	}
	if len(grants) == 0 {
		t.Fatalf("%s: no role is bound to ServiceAccount %s", who, sa)
	}
	unused := map[grant]bool{}
	for g := range grants {
		switch {
		case g.verb == "impersonate":
			continue // shown by the impersonated requests
		case g.verb == "list" && u.used[grant{g.group, g.resource, "watch"}] > 0:
			// Informers list with a streaming watch where the apiserver serves one, and fall
			// back to a plain list where it does not.
			continue
		case g.verb == "create" && u.created[grant{g.group, g.resource, "patch"}] > 0:
			// A server-side apply that creates its object needs create besides patch.
			continue
		}
		if u.used[g] == 0 && usedElsewhere[who][g] == "" {
			unused[g] = true
		}
	}
	if len(unused) > 0 {
		t.Errorf("%s: the shipped roles grant what the %s never used here: %v", who, who, sortedGrants(unused))
	}
	notGranted := map[grant]bool{}
	for g := range u.used {
		if !grants[g] && !grants[grant{g.group, g.resource, "*"}] {
			notGranted[g] = true
		}
	}
	if len(notGranted) > 0 {
		t.Errorf("%s: used without a grant (so forbidden): %v", who, sortedGrants(notGranted))
	}
	for g, why := range usedElsewhere[who] {
		if !grants[g] {
			t.Errorf("%s: usedElsewhere names %s, which no shipped role grants any more", who, g)
		} else if u.used[g] > 0 {
			t.Logf("%s: %s is listed as used elsewhere (%s) but was used here too", who, g, why)
		}
	}
	t.Logf("%s: %d grants; used in this run: %v", who, len(grants), sortedUse(u.used))
}

func sortedUse(m map[grant]int) []string {
	s := map[grant]bool{}
	for g := range m {
		s[g] = true
	}
	return sortedGrants(s)
}

func waitUntil(t *testing.T, timeout time.Duration, alive func(), cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		alive()
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func logs(ws ...*testenv.Workload) string {
	var b strings.Builder
	for _, w := range ws {
		out := w.Output()
		if len(out) > 6000 {
			out = "…" + out[len(out)-6000:]
		}
		fmt.Fprintf(&b, "--- %s ---\n%s\n", w.Name, out)
	}
	return b.String()
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(l), sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func conditionSummary(cs []metav1.Condition) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s=%s (%s)", c.Type, c.Status, c.Reason))
	}
	return strings.Join(parts, ", ")
}
