package install

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cellsync/cellsync/agent/manager"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	hubmanager "github.com/cellsync/cellsync/hub/manager"
	"github.com/cellsync/cellsync/test/testenv"
)

// `kubectl cells join` against a hub (installed from its chart, running) and a bare member:
// bad input creates nothing and says what to fix; --dry-run prints and creates nothing; join
// installs the agent and the cell, whose agent (run as the Deployment join installed, with its
// ServiceAccount's token) reports Ready on the hub; a second join changes nothing; unjoin
// removes what join made.
func TestJoin(t *testing.T) {
	inContainers := images(t)
	ctx := context.Background()
	dir := t.TempDir()
	git, repoURL, hub, member := startParts(t, "", "")
	probe, _ := testenv.FreePort()
	hubObjs := render(t, "cellsync-hub", "cellsync-hub", systemNS, "git.url="+repoURL, "statusInterval=2s", "staleAfter=30s",
		"metrics.port=0", fmt.Sprintf("probes.port=%d", probe))
	hubAdmin := install(t, hub.Config, hubObjs, hubmanager.Scheme())
	createGitSecret(t, hubAdmin)
	hubWL := run(t, hub.Config, hubObjs, "cellsync-hub", "hub", "./hub/cmd/hub", inContainers, dir)
	defer hubWL.Stop()

	scheme := manager.Scheme()
	_ = appsv1.AddToScheme(scheme)
	memberAdmin, err := client.New(member.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := memberAdmin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cellNS}}); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "git-password")
	if err := os.WriteFile(pw, []byte(testenv.WorldGitPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agentImage := "ghcr.io/cellsync/agent:test"
	if inContainers {
		agentImage = image(t, "agent")
	}
	// The cell reports to a status repository of its own (a shard), as a large fleet does: the
	// cell turns Ready on the hub only when the hub reads its reports there.
	statusURL, err := git.CreateRepo("status-shard-1")
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"join", "cell-1", "--kubeconfig", member.Kubeconfig, "--hub-kubeconfig", hub.Kubeconfig, "--status-url", statusURL,
		"--namespaces", cellNS, "--git-url", repoURL, "--git-username", testenv.WorldGitUser, "--git-password-file", pw,
		"--member-cluster", "member-1", "--cell-labels", hubv1alpha1.LabelEnv + "=demo", "--interval", "2s", "--heartbeat-interval", "1s",
		"--agent-image", agentImage, "--sign-reports", "--prometheus-address", "http://127.0.0.1:9090"}
	with := func(flag, value string) []string { return withAll(base, flag, value) }
	if err := hubAdmin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appsNS}}); err != nil {
		t.Fatal(err)
	}
	nothingCreated := func(t *testing.T, what string) {
		t.Helper()
		err := memberAdmin.Get(ctx, client.ObjectKey{Name: systemNS}, &corev1.Namespace{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s: namespace %s exists in the member (err %v): join created something", what, systemNS, err)
		}
		err = hubAdmin.Get(ctx, client.ObjectKey{Name: "cell-1"}, &hubv1alpha1.Cell{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s: Cell cell-1 exists on the hub (err %v)", what, err)
		}
	}
	for _, bad := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown cell namespace", with("--namespaces", "nope"), `namespace "nope" does not exist in the member cluster`},
		{"unreachable Git URL", with("--git-url", "http://127.0.0.1:1/gitops.git"), "cannot list the repository http://127.0.0.1:1/gitops.git"},
		{"wrong password", with("--git-password-file", writeFile(t, dir, "bad-pw", "wrong")), "the Git server refused the credentials"},
		{"hub kubeconfig is a member's", with("--hub-kubeconfig", member.Kubeconfig), "does not serve the cellsync hub API"},
		{"member kubeconfig is the hub's", with("--kubeconfig", hub.Kubeconfig), "check that the kubeconfig names the right cluster"},
		{"member without Knative", withAll(base, "--kubeconfig", hub.Kubeconfig, "--namespaces", appsNS), "does not serve Knative Serving"},
		{"password in the URL", with("--git-url", strings.Replace(repoURL, "http://", "http://u:secret@", 1)), "password"},
		{"bad cell name", append([]string{"join", "Cell_1"}, base[2:]...), "not a valid cell name"},
		{"a Prometheus address that is no URL", with("--prometheus-address", "prometheus:9090"), `--prometheus-address "prometheus:9090" is not an http(s) URL`},
		{"an unreachable status repository", with("--status-url", "http://127.0.0.1:1/status.git"), "--status-url: cannot list the repository http://127.0.0.1:1/status.git"},
	} {
		out, err := kubectlCells(t, bad.args...)
		if err == nil {
			t.Errorf("%s: join succeeded:\n%s", bad.name, out)
		} else if !strings.Contains(out, bad.want) {
			t.Errorf("%s: join said %q, want it to say %q", bad.name, out, bad.want)
		}
		if strings.Contains(out, "secret@") {
			t.Errorf("%s: join printed the password: %s", bad.name, out)
		}
		nothingCreated(t, bad.name)
	}

	out, err := kubectlCells(t, append(base, "--dry-run")...)
	if err != nil {
		t.Fatalf("join --dry-run: %v\n%s", err, out)
	}
	for _, want := range []string{"kind: CellSync", "kind: Deployment", "kind: RoleBinding", "kind: Cell\n", "password: <hidden>", "nothing was changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("join --dry-run does not print %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, testenv.WorldGitPassword) {
		t.Errorf("join --dry-run printed the Git password")
	}
	nothingCreated(t, "--dry-run")

	out, err = kubectlCells(t, base...)
	if err != nil {
		t.Fatalf("join: %v\n%s", err, out)
	}
	t.Logf("join:\n%s", out)
	// The agent join installed, run as its Deployment says with its own ServiceAccount.
	d := &appsv1.Deployment{}
	if err := memberAdmin.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: "cellsync-agent"}, d); err != nil {
		t.Fatalf("join installed no agent: %v", err)
	}
	if got := d.Spec.Template.Spec.Containers[0].Image; got != agentImage {
		t.Errorf("the agent's image is %s, want %s", got, agentImage)
	}
	for i, a := range d.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--health-probe-bind-address=") || strings.HasPrefix(a, "--metrics-bind-address=") {
			// Host networking here: the shipped ports would collide with the hub's.
			d.Spec.Template.Spec.Containers[0].Args[i] = strings.SplitN(a, "=", 2)[0] + "=0"
		}
	}
	token, err := testenv.MintToken(ctx, member.Config, systemNS, d.Spec.Template.Spec.ServiceAccountName)
	if err != nil {
		t.Fatal(err)
	}
	bin := ""
	img := ""
	if inContainers {
		img = agentImage
	} else if bin, err = testenv.Binary("./agent/cmd/agent"); err != nil {
		t.Fatal(err)
	}
	agentWL, err := testenv.RunDeployment(d, member.Config, token, img, bin, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer agentWL.Stop()
	// A cell turns Ready once its agent applied its branch: place the sample app on it.
	shipApp(t, hubAdmin, git, dir)
	cell := &hubv1alpha1.Cell{}
	waitUntil(t, 3*time.Minute, func() {
		if agentWL.Exited() || hubWL.Exited() {
			t.Fatalf("a workload exited:\n%s", logs(hubWL, agentWL))
		}
	}, func() bool {
		if err := hubAdmin.Get(ctx, client.ObjectKey{Name: "cell-1"}, cell); err != nil {
			return false
		}
		return meta.IsStatusConditionTrue(cell.Status.Conditions, "Ready")
	}, func() string {
		return fmt.Sprintf("cell-1 never turned Ready on the hub: %s\n%s", conditionSummary(cell.Status.Conditions), logs(hubWL, agentWL))
	})
	if strings.Contains(strings.ToLower(agentWL.Output()), "forbidden") {
		t.Errorf("the agent join installed logged a forbidden request:\n%s", grepLines(agentWL.Output(), "forbidden"))
	}
	// --prometheus-address: the cell's owner points the agent at the cell's Prometheus.
	cs := &agentv1alpha1.CellSync{}
	if err := memberAdmin.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: "cell-1"}, cs); err != nil {
		t.Fatal(err)
	}
	if a := cs.Spec.Analysis; a == nil || a.Prometheus == nil || a.Prometheus.Address != "http://127.0.0.1:9090" {
		t.Errorf("the CellSync's analysis is %+v, want the Prometheus join was given", a)
	}
	// --status-url: the agent's reports are in the status repository, none in the fleet's.
	if cs.Spec.StatusURL != statusURL || cell.Spec.StatusURL != statusURL {
		t.Errorf("the CellSync's statusURL is %q and the Cell's %q, want %s", cs.Spec.StatusURL, cell.Spec.StatusURL, statusURL)
	}
	if heads, err := git.BranchHeads("status-shard-1", "status/"); err != nil || heads["status/cell-1"] == "" {
		t.Errorf("no report of cell-1 in the status repository: %v %v", heads, err)
	}
	if heads, err := git.BranchHeads("gitops", "status/"); err != nil || len(heads) != 0 {
		t.Errorf("reports reached the fleet repository: %v %v", heads, err)
	}
	// --sign-reports: the Cell trusts one key, and the agent's reports are signed with it.
	if len(cell.Spec.ReportKeys) != 1 {
		t.Errorf("the Cell trusts %d report keys, want the one join made", len(cell.Spec.ReportKeys))
	}
	if !meta.IsStatusConditionTrue(cell.Status.Conditions, hubv1alpha1.ReportTrustedCondition) {
		t.Errorf("cell-1's reports are not trusted: %s", conditionSummary(cell.Status.Conditions))
	}

	// Again, with the kubeconfig flag before the command as kubectl allows: nothing changes.
	before := joinedVersions(t, memberAdmin, hubAdmin)
	out, err = kubectlCells(t, append([]string{"--kubeconfig", member.Kubeconfig}, withAll(base, "--kubeconfig", member.Kubeconfig)...)...)
	if err != nil {
		t.Fatalf("second join: %v\n%s", err, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "member: ") || strings.HasPrefix(l, "hub: ") {
			if !strings.HasSuffix(l, " unchanged") {
				t.Errorf("second join changed something: %s", l)
			}
		}
	}
	if after := joinedVersions(t, memberAdmin, hubAdmin); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("second join changed resourceVersions:\nbefore %v\nafter  %v", before, after)
	}

	// The same cell from another cluster is refused and changes nothing.
	out, err = kubectlCells(t, with("--member-cluster", "member-2")...)
	if err == nil || !strings.Contains(out, `cell cell-1 is already hosted by cluster "member-1"`) {
		t.Errorf("joining cell-1 as another cluster: err %v, said %q", err, out)
	}
	if after := joinedVersions(t, memberAdmin, hubAdmin); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a refused join changed resourceVersions:\nbefore %v\nafter  %v", before, after)
	}

	out, err = kubectlCells(t, "unjoin", "cell-1", "--kubeconfig", member.Kubeconfig, "--hub-kubeconfig", hub.Kubeconfig)
	if err != nil {
		t.Fatalf("unjoin: %v\n%s", err, out)
	}
	t.Logf("unjoin:\n%s", out)
	if err := hubAdmin.Get(ctx, client.ObjectKey{Name: "cell-1"}, &hubv1alpha1.Cell{}); !apierrors.IsNotFound(err) {
		t.Errorf("Cell cell-1 is still on the hub after unjoin (err %v)", err)
	}
	if left := joinedVersions(t, memberAdmin, nil); len(left) > 0 {
		t.Errorf("unjoin left %v in the member", left)
	}
	if err := memberAdmin.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: "cellsync-agent"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("unjoin left the agent Deployment that join installed (err %v)", err)
	}
}

// withAll is args with each flag's value replaced (or the flag added).
func withAll(args []string, flagValues ...string) []string {
	out := append([]string(nil), args...)
next:
	for i := 0; i+1 < len(flagValues); i += 2 {
		for j := range out {
			if out[j] == flagValues[i] {
				out[j+1] = flagValues[i+1]
				continue next
			}
		}
		out = append(out, flagValues[i], flagValues[i+1])
	}
	return out
}

// joinedVersions is every object join made for cell-1, with its resourceVersion.
func joinedVersions(t *testing.T, member, hub client.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	sel := client.MatchingLabels{"app.kubernetes.io/managed-by": "kubectl-cells"}
	add := func(kind string, list client.ObjectList) {
		if err := member.List(ctx, list, sel); err != nil && !meta.IsNoMatchError(err) {
			t.Fatal(err)
		}
		items, _ := meta.ExtractList(list)
		for _, o := range items {
			mo := o.(client.Object)
			v := mo.GetResourceVersion()
			if kind == "CellSync" {
				// The agent writes the CellSync's status as it works; join owns its spec
				// and labels.
				v = fmt.Sprint(mo.GetGeneration(), mo.GetLabels())
			}
			out[kind+" "+mo.GetNamespace()+"/"+mo.GetName()] = v
		}
	}
	add("CellSync", &agentv1alpha1.CellSyncList{})
	add("Secret", &corev1.SecretList{})
	add("ServiceAccount", &corev1.ServiceAccountList{})
	if hub != nil {
		c := &hubv1alpha1.Cell{}
		if err := hub.Get(ctx, client.ObjectKey{Name: "cell-1"}, c); err == nil {
			// The Cell's status moves with heartbeats; its spec and labels are join's.
			out["Cell cell-1"] = fmt.Sprint(c.Generation, c.Labels)
		}
	}
	return out
}

// kubectlCells runs the plugin as kubectl does: the binary on PATH, called as `kubectl cells`.
func kubectlCells(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := testenv.Binary("./hub/cmd/kubectl-cells")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("kubectl", append([]string{"cells"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
