package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ClusterOptions choose what a test cluster holds.
type ClusterOptions struct {
	// HubCRDs installs the hub API (config/crd/bases).
	HubCRDs bool
	// AgentCRDs installs the member API (config/agent/crd/bases).
	AgentCRDs bool
	// ExtraCRDDirs installs CRDs from more folders.
	ExtraCRDDirs []string
	// Knative installs the Knative Serving CRDs from the knative.dev/serving module.
	Knative bool
	// KwokStages starts kwok with these Stage files so that Knative status is reported.
	KwokStages []string
	// AuditLog, when set, is where the apiserver writes an audit event (level Metadata) for
	// every request: who asked, as whom, for what, and the answer.
	AuditLog string
}

// Cluster is a running envtest control plane.
type Cluster struct {
	Env        *envtest.Environment
	Config     *rest.Config
	Kubeconfig string
	kwok       *exec.Cmd
	kwokLog    string
	kwokExited chan error
	dir        string
}

// KwokLog returns what kwok printed, for diagnosing a test that saw no Knative status.
func (c *Cluster) KwokLog() string {
	if c.kwokLog == "" {
		return ""
	}
	b, _ := os.ReadFile(c.kwokLog)
	return string(b)
}

// RepoRoot is the cellsync module root, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// KnativeCRDDir is the Serving CRD folder of the knative.dev/serving module in go.mod.
func KnativeCRDDir() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "knative.dev/serving")
	cmd.Dir = RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("failed to locate the knative.dev/serving module (go list): %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "core", "300-resources"), nil
}

// StartCluster starts a control plane. KUBEBUILDER_ASSETS must point at kube-apiserver and etcd
// (`make test` sets it).
func StartCluster(opts ClusterOptions) (*Cluster, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		def := filepath.Join(RepoRoot(), "bin", "k8s", "1.37.2-linux-amd64")
		if _, err := os.Stat(filepath.Join(def, "kube-apiserver")); err != nil {
			return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set and %s has no kube-apiserver: run `make envtest` or `make test`", def)
		}
		_ = os.Setenv("KUBEBUILDER_ASSETS", def)
	}
	env := &envtest.Environment{ErrorIfCRDPathMissing: true}
	if opts.HubCRDs {
		env.CRDDirectoryPaths = append(env.CRDDirectoryPaths, filepath.Join(RepoRoot(), "config", "crd", "bases"))
	}
	if opts.AgentCRDs {
		env.CRDDirectoryPaths = append(env.CRDDirectoryPaths, filepath.Join(RepoRoot(), "config", "agent", "crd", "bases"))
	}
	env.CRDDirectoryPaths = append(env.CRDDirectoryPaths, opts.ExtraCRDDirs...)
	if opts.Knative || len(opts.KwokStages) > 0 {
		dir, err := KnativeCRDDir()
		if err != nil {
			return nil, err
		}
		env.CRDDirectoryPaths = append(env.CRDDirectoryPaths, dir)
	}
	if opts.AuditLog != "" {
		policy := filepath.Join(filepath.Dir(opts.AuditLog), "audit-policy.yaml")
		if err := os.WriteFile(policy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"), 0o600); err != nil {
			return nil, err
		}
		env.ControlPlane.GetAPIServer().Configure().
			Set("audit-policy-file", policy).
			Set("audit-log-path", opts.AuditLog).
			Set("audit-log-mode", "blocking")
	}
	c := &Cluster{Env: env}
	var err error
	if c.dir, err = os.MkdirTemp("", "cellsync-cluster-"); err != nil {
		return nil, err
	}
	// The apiserver's certificates live in a folder of the cluster's own, not one envtest
	// removes when the apiserver stops, so that it can restart with the same certificates.
	env.ControlPlane.GetAPIServer().CertDir = filepath.Join(c.dir, "apiserver")
	if err := os.MkdirAll(env.ControlPlane.GetAPIServer().CertDir, 0o700); err != nil {
		_ = os.RemoveAll(c.dir)
		return nil, err
	}
	cfg, err := env.Start()
	if err != nil {
		_ = os.RemoveAll(c.dir)
		return nil, fmt.Errorf("failed to start envtest: %w", err)
	}
	c.Config = cfg
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := WriteKubeconfig(cfg, c.Kubeconfig); err != nil {
		_ = c.Stop()
		return nil, err
	}
	if len(opts.KwokStages) > 0 {
		if err := c.startKwok(opts.KwokStages); err != nil {
			_ = c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// Stop stops kwok and the control plane.
func (c *Cluster) Stop() error {
	if c.kwok != nil && c.kwok.Process != nil {
		_ = c.kwok.Process.Kill()
		<-c.kwokExited
	}
	err := c.Env.Stop()
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
	return err
}

// RestartAPIServer kills the kube-apiserver (SIGKILL, as a crash or an OOM kill would) and
// starts it again on the same address, with the same certificates and the same etcd: clients
// keep their configuration and see an outage.
func (c *Cluster) RestartAPIServer() error {
	as := c.Env.ControlPlane.GetAPIServer()
	pid, err := pidWithArg("--cert-dir=" + as.CertDir)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("failed to kill the kube-apiserver: %w", err)
	}
	if err := as.Stop(); err != nil {
		return fmt.Errorf("failed to reap the kube-apiserver: %w", err)
	}
	if err := as.Start(); err != nil {
		return fmt.Errorf("failed to start the kube-apiserver again: %w", err)
	}
	return nil
}

// pidWithArg finds the one process whose command line holds arg.
func pidWithArg(arg string) (int, error) {
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg {
				return strconv.Atoi(filepath.Base(filepath.Dir(p)))
			}
		}
	}
	return 0, fmt.Errorf("no process runs with %s", arg)
}

// WriteKubeconfig writes a kubeconfig for a rest.Config (client certificates or token).
func WriteKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	kc.CurrentContext = "envtest"
	return clientcmd.WriteToFile(*kc, path)
}

// KwokBinary is the kwok binary: $CELLSYNC_KWOK, or bin/kwok-v0.8.0.
func KwokBinary() string {
	if p := os.Getenv("CELLSYNC_KWOK"); p != "" {
		return p
	}
	return filepath.Join(RepoRoot(), "bin", "kwok-v0.8.0")
}

// KnativeStages is the project's kwok Stage file that reports Knative Service status.
func KnativeStages() string {
	return filepath.Join(RepoRoot(), "test", "testenv", "testdata", "knative-stages.yaml")
}

func (c *Cluster) startKwok(stages []string) error {
	bin := KwokBinary()
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("kwok not found at %s: run `make test` (it builds kwok) or set CELLSYNC_KWOK", bin)
	}
	args := []string{"--kubeconfig", c.Kubeconfig, "--manage-all-nodes=false",
		"--manage-nodes-with-label-selector=kwok-none=true", "--server-address=127.0.0.1:0"}
	for _, s := range stages {
		args = append(args, "--config", s)
	}
	if err := waitForOpenAPIV3(c.Config, "apis/serving.knative.dev/v1", 60*time.Second); err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	logf, err := os.Create(filepath.Join(c.dir, "kwok.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	c.kwokLog = logf.Name()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start kwok: %w", err)
	}
	c.kwok = cmd
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// kwok has no readiness signal; one that survives its start-up checks keeps running.
	select {
	case err := <-exited:
		c.kwok = nil
		return fmt.Errorf("kwok exited at start (%v): %s", err, c.KwokLog())
	case <-time.After(time.Second):
		c.kwokExited = exited
		return nil
	}
}

// waitForOpenAPIV3 waits until the apiserver publishes a group version in OpenAPI v3, which
// lags behind a CRD becoming Established; kwok refuses to start without it.
func waitForOpenAPIV3(cfg *rest.Config, path string, timeout time.Duration) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		paths, err := dc.OpenAPIV3().Paths()
		if err == nil {
			if _, ok := paths[path]; ok {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the apiserver did not publish %s in OpenAPI v3 within %s (last error: %v)", path, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// KustomizeBuild runs `kustomize build` on dir: $CELLSYNC_KUSTOMIZE, bin/kustomize-v5.8.1, or
// `kubectl kustomize` when neither exists.
func KustomizeBuild(dir string) (string, error) {
	bin := os.Getenv("CELLSYNC_KUSTOMIZE")
	if bin == "" {
		bin = filepath.Join(RepoRoot(), "bin", "kustomize-v5.8.1")
	}
	var cmd *exec.Cmd
	if _, err := os.Stat(bin); err == nil {
		cmd = exec.Command(bin, "build", dir)
	} else {
		cmd = exec.Command("kubectl", "kustomize", dir)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kustomize build %s: %v: %s", dir, err, out)
	}
	return string(out), nil
}
