package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	agentmanager "github.com/cellsync/cellsync/agent/manager"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/gitauth"
	hubmanager "github.com/cellsync/cellsync/hub/manager"
)

// World names, shared by the e2e suite and the demo.
const (
	WorldRepo          = "gitops"
	WorldGitUser       = "cellsync"
	WorldGitPassword   = "demo-password"
	WorldHubNamespace  = "cellsync-system"
	WorldAppsNamespace = "shop"
	// WorldCellNamespace is the namespace each cell owns in its member cluster.
	WorldCellNamespace = "apps"
)

// WorldOptions size a world.
type WorldOptions struct {
	// Members is how many member clusters (one cell each) to start.
	Members int
	// Poll is the agents' and the source's poll interval and the hub's status interval.
	Poll time.Duration
	// StaleAfter is the hub's heartbeat threshold.
	StaleAfter time.Duration
	// Dir receives the kubeconfigs (hub.kubeconfig, member-N.kubeconfig) and the source clone.
	Dir string
	// Progress, when set, is told what is starting.
	Progress func(format string, args ...any)
	// Processes runs the hub and each agent as their real binaries, each its own process with
	// a token of its shipped ServiceAccount and the shipped RBAC (config/rbac,
	// config/agent/rbac) instead of in this process as admin. Their logs go to Dir/logs.
	Processes bool
	// Context, when set, stops StartWorld between its steps once it is done.
	Context context.Context
	// AgentClockSkew sets the in-process agents' clocks this far from the hub's (their
	// heartbeat times come from it), as two machines' clocks can be apart.
	AgentClockSkew time.Duration
}

// Member is one member cluster with its agent, hosting one cell.
type Member struct {
	Name, Cell string
	Cluster    *Cluster
	Client     client.Client
	Kubeconfig string
	stopAgent  func()
	// agent is the agent's process, when it runs as its binary; startAgent starts another on
	// the same data directory.
	agent      *Process
	startAgent func() (*Process, error)
}

// World is a whole cellsync installation on this machine: a Git server, a hub apiserver with
// the hub manager, and member apiservers (with the Knative CRDs and kwok) each with an agent.
type World struct {
	Opts      WorldOptions
	Git       *GitServer
	RepoURL   string
	Hub       *Cluster
	HubClient client.Client
	// HubKubeconfig is the hub's kubeconfig in Opts.Dir.
	HubKubeconfig string
	Members       []*Member
	// Source is a clone of the repo's main branch, to push app specs with git.
	Source  *Workdir
	stopHub func()
}

// StartWorld starts everything; Stop tears it down.
func StartWorld(opts WorldOptions) (w *World, err error) {
	if opts.Members <= 0 {
		opts.Members = 3
	}
	if opts.Poll <= 0 {
		opts.Poll = 2 * time.Second
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = 5 * opts.Poll
	}
	if opts.Progress == nil {
		opts.Progress = func(string, ...any) {}
	}
	if opts.Dir == "" {
		if opts.Dir, err = os.MkdirTemp("", "cellsync-world-"); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, err
	}
	w = &World{Opts: opts}
	defer func() {
		if err != nil {
			w.Stop()
		}
	}()
	opts.Progress("starting the Git smart-HTTP server (git http-backend, basic auth)")
	if w.Git, err = StartGitServer(WorldGitUser, WorldGitPassword); err != nil {
		return w, err
	}
	if w.RepoURL, err = w.Git.CreateRepo(WorldRepo); err != nil {
		return w, err
	}
	if err := w.interrupted(); err != nil {
		return w, err
	}
	opts.Progress("starting the hub apiserver (envtest: kube-apiserver + etcd)")
	if err = w.newHub(); err != nil {
		return w, err
	}
	for i := 1; i <= opts.Members; i++ {
		if err := w.interrupted(); err != nil {
			return w, err
		}
		name := fmt.Sprintf("member-%d", i)
		opts.Progress("starting %s: apiserver with the Knative Serving CRDs, kwok simulating Knative status, and an agent for cell-%d", name, i)
		m, err := w.StartMember(name, fmt.Sprintf("cell-%d", i))
		if err != nil {
			return w, err
		}
		w.Members = append(w.Members, m)
	}
	if w.Source, err = CloneSource(w.Git.AuthURL(WorldRepo), filepath.Join(opts.Dir, "repo"), "main"); err != nil {
		return w, err
	}
	return w, nil
}

// newHub starts a hub apiserver with an empty etcd, seeds it with what a person installs (the
// namespace, the Git Secret, the Cells and the AppSource) and starts the hub manager on it.
func (w *World) newHub() error {
	var err error
	if w.Hub, err = StartCluster(ClusterOptions{HubCRDs: true}); err != nil {
		return err
	}
	w.HubKubeconfig = filepath.Join(w.Opts.Dir, "hub.kubeconfig")
	if err = WriteKubeconfig(w.Hub.Config, w.HubKubeconfig); err != nil {
		return err
	}
	if w.HubClient, err = client.New(w.Hub.Config, client.Options{Scheme: hubmanager.Scheme()}); err != nil {
		return err
	}
	if err = w.seedHub(); err != nil {
		return err
	}
	return w.startHub()
}

// RebuildHub loses the hub: its manager and its apiserver with etcd are stopped, and a new hub
// starts on a new, empty apiserver with the same Git repository, given only the Cells and the
// AppSource again. Everything else must come back from Git.
func (w *World) RebuildHub() error {
	if w.stopHub != nil {
		w.stopHub()
		w.stopHub = nil
	}
	if w.Hub != nil {
		if err := w.Hub.Stop(); err != nil {
			return fmt.Errorf("stopping the hub apiserver: %w", err)
		}
	}
	return w.newHub()
}

// interrupted is the Context's error, once it is done.
func (w *World) interrupted() error {
	if w.Opts.Context == nil {
		return nil
	}
	if err := w.Opts.Context.Err(); err != nil {
		return fmt.Errorf("interrupted while starting: %w", err)
	}
	return nil
}

// LogDir is where the hub's and the agents' processes write their logs (Processes).
func (w *World) LogDir() string { return filepath.Join(w.Opts.Dir, "logs") }

// seedHub creates the hub's namespace and Git Secret, one Cell per member, the apps namespace
// and its AppSource.
func (w *World) seedHub() error {
	ctx := context.Background()
	c := w.HubClient
	for _, ns := range []string{WorldHubNamespace, WorldAppsNamespace} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	if err := c.Create(ctx, gitCredentials(WorldHubNamespace)); err != nil {
		return err
	}
	for i := 1; i <= w.Opts.Members; i++ {
		cell := &hubv1alpha1.Cell{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cell-%d", i), Labels: map[string]string{hubv1alpha1.LabelRegion: "local", hubv1alpha1.LabelEnv: "demo"}},
			Spec:       hubv1alpha1.CellSpec{Cluster: fmt.Sprintf("member-%d", i), Namespaces: []string{WorldCellNamespace}},
		}
		if err := c.Create(ctx, cell); err != nil {
			return err
		}
	}
	return c.Create(ctx, &hubv1alpha1.AppSource{
		ObjectMeta: metav1.ObjectMeta{Namespace: WorldAppsNamespace, Name: "main"},
		Spec:       hubv1alpha1.AppSourceSpec{Branch: "main", Path: "apps", Interval: metav1.Duration{Duration: w.Opts.Poll}, Prune: true},
	})
}

func gitCredentials(ns string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git-credentials", Namespace: ns},
		Data:       map[string][]byte{gitauth.SecretUsername: []byte(WorldGitUser), gitauth.SecretPassword: []byte(WorldGitPassword)},
	}
}

// startHub runs the real hub manager: its binary as the shipped ServiceAccount (Processes), or
// in this process.
func (w *World) startHub() error {
	if w.Opts.Processes {
		p, err := StartAsServiceAccount(w.Hub.Config, "config/rbac", WorldHubNamespace, "cellsync-hub", "./hub/cmd/hub",
			filepath.Join(w.LogDir(), "hub.log"),
			"--namespace="+WorldHubNamespace, "--git-url="+w.RepoURL, "--git-secret=git-credentials",
			"--status-interval="+w.Opts.Poll.String(), "--stale-after="+w.Opts.StaleAfter.String(), "--resync-interval=10m",
			"--leader-elect=true", "--metrics-bind-address=0", "--health-probe-bind-address=0")
		if err != nil {
			return fmt.Errorf("starting the hub: %w", err)
		}
		w.stopHub = p.Stop
		return nil
	}
	mgr, err := ctrl.NewManager(w.Hub.Config, ctrl.Options{
		Scheme:                 hubmanager.Scheme(),
		Cache:                  hubmanager.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return err
	}
	if _, err := hubmanager.Setup(mgr, hubmanager.Config{
		Namespace:      WorldHubNamespace,
		GitURL:         w.RepoURL,
		GitSecret:      "git-credentials",
		Resync:         10 * time.Minute,
		StatusInterval: w.Opts.Poll,
		StaleAfter:     w.Opts.StaleAfter,
	}); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "hub manager stopped:", err)
		}
	}()
	w.stopHub = func() { cancel(); <-done }
	return nil
}

// RestartHub stops the hub manager and starts a new one: a new process would start the same way,
// with nothing in memory (no Git clone, no reports, no render marks).
func (w *World) RestartHub() error {
	if w.stopHub != nil {
		w.stopHub()
		w.stopHub = nil
	}
	return w.startHub()
}

// StartMember starts a member cluster with the Knative CRDs and kwok, and an agent syncing cell
// (its binary as the shipped ServiceAccount with Opts.Processes, in this process otherwise).
func (w *World) StartMember(name, cell string) (*Member, error) {
	return w.startMember(name, cell, w.Opts.Processes)
}

// StartMemberProcess is StartMember with the agent as its own binary under the shipped RBAC,
// whatever Opts.Processes says, so that a test can kill it (KillAgent) and start it again on
// the same data directory (RestartAgent).
func (w *World) StartMemberProcess(name, cell string) (*Member, error) {
	return w.startMember(name, cell, true)
}

func (w *World) startMember(name, cell string, process bool) (*Member, error) {
	ctx := context.Background()
	cl, err := StartCluster(ClusterOptions{AgentCRDs: true, KwokStages: []string{KnativeStages()}})
	if err != nil {
		return nil, err
	}
	m := &Member{Name: name, Cell: cell, Cluster: cl, Kubeconfig: filepath.Join(w.Opts.Dir, name+".kubeconfig")}
	fail := func(err error) (*Member, error) {
		m.Stop()
		return nil, err
	}
	if err := WriteKubeconfig(cl.Config, m.Kubeconfig); err != nil {
		return fail(err)
	}
	if m.Client, err = client.New(cl.Config, client.Options{Scheme: agentmanager.Scheme()}); err != nil {
		return fail(err)
	}
	for _, ns := range []string{WorldHubNamespace, WorldCellNamespace} {
		if err := m.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fail(err)
		}
	}
	if err := m.Client.Create(ctx, gitCredentials(WorldHubNamespace)); err != nil {
		return fail(err)
	}
	hb := w.Opts.Poll / 2
	if err := GrantApplier(ctx, cl.Config, WorldHubNamespace, WorldCellNamespace); err != nil {
		return fail(err)
	}
	if err := m.Client.Create(ctx, &agentv1alpha1.CellSync{
		ObjectMeta: metav1.ObjectMeta{Name: cell, Namespace: WorldHubNamespace},
		Spec: agentv1alpha1.CellSyncSpec{
			Cell: cell, URL: w.RepoURL, SecretRef: &meta.LocalObjectReference{Name: "git-credentials"},
			Interval: metav1.Duration{Duration: w.Opts.Poll}, HeartbeatInterval: &metav1.Duration{Duration: hb},
			Timeout: &metav1.Duration{Duration: 30 * time.Second}, Prune: true,
			Policy: agentv1alpha1.Policy{Namespaces: []string{WorldCellNamespace}},
		},
	}); err != nil {
		return fail(err)
	}
	data := filepath.Join(w.Opts.Dir, "agents", name+"-"+fmt.Sprint(time.Now().UnixNano()))
	if process {
		runs := 0
		m.startAgent = func() (*Process, error) {
			// <member>-agent.log, then <member>-agent-2.log, ... for each restart.
			runs++
			log := name + "-agent.log"
			if runs > 1 {
				log = fmt.Sprintf("%s-agent-%d.log", name, runs)
			}
			return StartAsServiceAccount(cl.Config, "config/agent/rbac", WorldHubNamespace, "cellsync-agent", "./agent/cmd/agent",
				filepath.Join(w.LogDir(), log),
				"--namespace="+WorldHubNamespace, "--data-dir="+data,
				"--leader-elect=true", "--metrics-bind-address=0", "--health-probe-bind-address=0")
		}
		if err := m.RestartAgent(); err != nil {
			return fail(fmt.Errorf("starting the agent of %s: %w", name, err))
		}
		return m, nil
	}
	if m.stopAgent, err = StartAgentAt(cl.Config, WorldHubNamespace, data, func() time.Time { return time.Now().Add(w.Opts.AgentClockSkew) }); err != nil {
		return fail(err)
	}
	return m, nil
}

// KillAgent kills the member's agent process at once (SIGKILL), as a node failure or an OOM
// kill would, and waits for it to be gone.
func (m *Member) KillAgent() error {
	if m.agent == nil {
		return fmt.Errorf("the agent of %s does not run as a process", m.Name)
	}
	if err := m.agent.Cmd.Process.Kill(); err != nil {
		return err
	}
	_ = m.agent.Cmd.Wait()
	m.agent, m.stopAgent = nil, nil
	return nil
}

// RestartAgent starts the member's agent process (again) on the same data directory.
func (m *Member) RestartAgent() error {
	if m.startAgent == nil {
		return fmt.Errorf("the agent of %s does not run as a process", m.Name)
	}
	m.StopAgent()
	p, err := m.startAgent()
	if err != nil {
		return err
	}
	m.agent, m.stopAgent = p, p.Stop
	return nil
}

// StopAgent stops the member's agent (the cluster keeps running).
func (m *Member) StopAgent() {
	if m.stopAgent != nil {
		m.stopAgent()
		m.stopAgent = nil
	}
	m.agent = nil
}

// Stop stops the member's agent and cluster.
func (m *Member) Stop() {
	m.StopAgent()
	if m.Cluster != nil {
		_ = m.Cluster.Stop()
		m.Cluster = nil
	}
}

// Stop tears the world down.
func (w *World) Stop() {
	for _, m := range w.Members {
		m.Stop()
	}
	if w.stopHub != nil {
		w.stopHub()
	}
	if w.Hub != nil {
		_ = w.Hub.Stop()
	}
	if w.Git != nil {
		w.Git.Close()
	}
}

// SampleApp is the YAML the demo and the e2e suite push to main: a placement over every cell of
// the world and a canary app that walks [cell-1 20 %] → [cell-1, cell-2 50 %] → [all 100 %].
func SampleApp(image string, failureThreshold time.Duration) string {
	return PlainApp(image) + SampleStrategy(failureThreshold, "")
}

// SampleStrategy is the sample app's spec.strategy block: [cell-1 20 %] → [cell-1, cell-2 50 %]
// → [all 100 %], with the AnalysisTemplate named measured at every step when it is not "".
func SampleStrategy(failureThreshold time.Duration, analysisTemplate string) string {
	analysis := ""
	if analysisTemplate != "" {
		analysis = fmt.Sprintf("      analysis:\n        templates: [{name: %s}]\n", analysisTemplate)
	}
	return fmt.Sprintf(`  strategy:
    type: Canary
    canary:
      failureThreshold: %s
%s      steps:
      - cells: {names: [cell-1]}
        weight: 20
      - cells: {names: [cell-1, cell-2]}
        weight: 50
      - cells: {percent: 100}
        weight: 100
`, failureThreshold, analysis)
}

// PlainApp is the sample app without a strategy (all cells at once), placed on every cell
// labelled cellsync.io/env=demo.
func PlainApp(image string) string {
	return fmt.Sprintf(`apiVersion: hub.cellsync.io/v1alpha1
kind: CellPlacement
metadata:
  name: everywhere
  namespace: %[1]s
spec:
  cellSelector:
    matchLabels:
      cellsync.io/env: demo
---
apiVersion: hub.cellsync.io/v1alpha1
kind: ServerlessApp
metadata:
  name: web
  namespace: %[1]s
spec:
  placementRef:
    name: everywhere
  template:
    image: %[2]s
    env:
    - name: TARGET
      value: cellsync
`, WorldAppsNamespace, image)
}

// ErrorRateTemplate is the AnalysisTemplate error-rate the demo and the e2e suite use: the share
// of a canary revision's requests answered 5xx, from Knative queue-proxy's request counter, at
// most 5 %, measured every second until it passed twice.
func ErrorRateTemplate() string {
	return fmt.Sprintf(`apiVersion: hub.cellsync.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: error-rate, namespace: %s}
spec:
  metrics:
  - name: error-rate
    interval: 1s
    count: 2
    inconclusiveLimit: 20
    thresholdRange: {max: 0.05}
    prometheus:
      query: |
        sum(rate(revision_app_request_count{namespace_name="{{namespace}}",revision_name="{{canary}}",response_code_class="5xx"}[10s]))
        /
        sum(rate(revision_app_request_count{namespace_name="{{namespace}}",revision_name="{{canary}}"}[10s]))
`, WorldAppsNamespace)
}

// AnalysedApp is SampleApp with the error-rate template measured at every canary step, and the
// template itself.
func AnalysedApp(image string, failureThreshold time.Duration) string {
	return ErrorRateTemplate() + "---\n" + PlainApp(image) + SampleStrategy(failureThreshold, "error-rate")
}
