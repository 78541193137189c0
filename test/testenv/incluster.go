package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// MintToken asks the TokenRequest API for a token of ServiceAccount ns/name, as the kubelet
// does for a pod that runs as it.
func MintToken(ctx context.Context, cfg *rest.Config, ns, name string) (string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	ttl := int64(24 * 3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for ServiceAccount %s/%s: %w", ns, name, err)
	}
	return tr.Status.Token, nil
}

// DecodeManifests reads a multi-document YAML stream (helm template, kustomize build).
func DecodeManifests(b []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// ApplyManifests server-side applies objects as an installer would: CRDs and Namespaces first
// (waiting until the CRDs are established), then the rest. With dryRun the apiserver checks
// every object and stores nothing.
func ApplyManifests(ctx context.Context, c client.Client, objs []*unstructured.Unstructured, dryRun bool) error {
	first := func(u *unstructured.Unstructured) bool {
		return u.GetKind() == "CustomResourceDefinition" || u.GetKind() == "Namespace"
	}
	opts := []client.PatchOption{client.FieldOwner("installer"), client.ForceOwnership}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	for _, pass := range []bool{true, false} {
		for _, u := range objs {
			if first(u) != pass {
				continue
			}
			o := u.DeepCopy()
			if err := c.Patch(ctx, o, client.Apply, opts...); err != nil {
				return fmt.Errorf("apply %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
			}
			if u.GetKind() == "CustomResourceDefinition" && !dryRun {
				if err := waitCRD(ctx, c, u.GetName()); err != nil {
					return err
				}
			}
		}
		if pass {
			// The apiserver serves a new CRD's kind a moment after Established.
			if rm, ok := c.RESTMapper().(interface{ Reset() }); ok {
				rm.Reset()
			}
		}
	}
	return nil
}

func waitCRD(ctx context.Context, c client.Client, name string) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err == nil {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("CRD %s not established", name)
}

// Workload is one container of an installed Deployment, run on this machine as the kubelet
// would run it: as a podman container (host network, the ServiceAccount token, CA and namespace
// mounted where pods find them, the Deployment's args, env, volumes, user and read-only root
// filesystem), or, where no container runtime exists, as the plain binary with the same
// token and args.
type Workload struct {
	// Name is the Deployment's.
	Name   string
	Log    string
	cmd    *exec.Cmd
	podman string
	exited chan struct{}
}

// podmanSetup is podman's path and the environment and flags it runs with here, found once.
var podmanSetup = sync.OnceValues(func() (string, []string) {
	p, err := exec.LookPath("podman")
	if err != nil {
		return "", nil
	}
	var env []string
	if os.Getenv("CONTAINERS_CONF") == "" {
		conf := filepath.Join(os.TempDir(), "cellsync-containers.conf")
		if err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = []\n"), 0o644); err == nil {
			env = append(env, "CONTAINERS_CONF="+conf)
		}
	}
	return p, env
})

// HasContainerRuntime tells whether podman is here to build and run images.
func HasContainerRuntime() bool {
	p, _ := podmanSetup()
	return p != ""
}

// PodmanEnv is the environment podman (and `make images`) needs here: a CONTAINERS_CONF without
// default ulimits, unless one is set.
func PodmanEnv() []string {
	_, env := podmanSetup()
	return append(os.Environ(), env...)
}

// Podman is a podman command with the settings these machines need: runc where it is installed
// (crun fails on some kernels' hybrid cgroups) and PodmanEnv.
func Podman(args ...string) *exec.Cmd {
	p, _ := podmanSetup()
	if _, err := exec.LookPath("runc"); err == nil {
		args = append([]string{"--runtime", "runc"}, args...)
	}
	cmd := exec.Command(p, args...)
	cmd.Env = PodmanEnv()
	return cmd
}

// RunDeployment runs the first container of d against the cluster at cfg as ServiceAccount
// token. With podman set it runs image; otherwise binary.
func RunDeployment(d *appsv1.Deployment, cfg *rest.Config, token, image, binary, dir string) (*Workload, error) {
	pod := d.Spec.Template.Spec
	if len(pod.Containers) == 0 {
		return nil, fmt.Errorf("deployment %s has no container", d.Name)
	}
	ctr := pod.Containers[0]
	host, port, err := hostPort(cfg.Host)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	w := &Workload{Name: d.Name, Log: filepath.Join(dir, d.Name+".log"), exited: make(chan struct{})}
	env, err := containerEnv(d, ctr)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(w.Log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	if HasContainerRuntime() && image != "" {
		sa := filepath.Join(dir, d.Name+"-serviceaccount")
		if err := writeServiceAccountDir(sa, token, cfg.CAData, d.Namespace); err != nil {
			return nil, err
		}
		name := fmt.Sprintf("cellsync-%s-%d", d.Name, time.Now().UnixNano())
		args := []string{"run", "--rm", "--name", name, "--network", "host",
			"--pull", "never", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
			"-e", "KUBERNETES_SERVICE_HOST=" + host, "-e", "KUBERNETES_SERVICE_PORT=" + port,
			"-v", sa + ":/var/run/secrets/kubernetes.io/serviceaccount:ro"}
		if sc := ctr.SecurityContext; sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
			args = append(args, "--read-only")
		}
		if u := runAs(pod, ctr); u != "" {
			args = append(args, "--user", u)
		}
		for _, e := range env {
			args = append(args, "-e", e)
		}
		for _, m := range ctr.VolumeMounts {
			src, err := volumeDir(pod, m.Name, dir, d.Name)
			if err != nil {
				return nil, err
			}
			args = append(args, "-v", src+":"+m.MountPath)
		}
		args = append(args, image)
		args = append(args, ctr.Args...)
		w.cmd = Podman(args...)
		w.podman = name
	} else {
		kc := filepath.Join(dir, d.Name+".kubeconfig")
		if err := WriteKubeconfig(tokenConfig(cfg, token), kc); err != nil {
			return nil, err
		}
		args := []string{"--kubeconfig=" + kc}
		for _, a := range ctr.Args {
			// Volumes become folders here; paths in args follow them.
			for _, m := range ctr.VolumeMounts {
				src, err := volumeDir(pod, m.Name, dir, d.Name)
				if err != nil {
					return nil, err
				}
				a = strings.ReplaceAll(a, "="+m.MountPath, "="+src)
			}
			args = append(args, a)
		}
		w.cmd = exec.Command(binary, args...)
		w.cmd.Env = append(os.Environ(), env...)
		w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	w.cmd.Stdout, w.cmd.Stderr = logf, logf
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = w.cmd.Wait(); close(w.exited) }()
	return w, nil
}

// InContainer tells whether the workload runs as a container (or as a plain process).
func (w *Workload) InContainer() bool { return w.podman != "" }

// Exited tells whether the workload stopped by itself.
func (w *Workload) Exited() bool {
	select {
	case <-w.exited:
		return true
	default:
		return false
	}
}

// Output is what the workload printed so far.
func (w *Workload) Output() string {
	b, _ := os.ReadFile(w.Log)
	return string(b)
}

// Stop stops the workload (SIGTERM, then a kill after 15 s).
func (w *Workload) Stop() {
	if w.podman != "" {
		_ = Podman("stop", "-t", "10", w.podman).Run()
	} else if w.cmd.Process != nil {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-w.exited:
	case <-time.After(15 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.exited
	}
}

func hostPort(server string) (string, string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", "", err
	}
	h, p, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", "", fmt.Errorf("apiserver address %s: %w", server, err)
	}
	return h, p, nil
}

// containerEnv resolves the container's env as the kubelet would for the fields cellsync uses.
func containerEnv(d *appsv1.Deployment, c corev1.Container) ([]string, error) {
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+d.Namespace)
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
				env = append(env, fmt.Sprintf("%s=%d", e.Name, q.Value()))
			}
		default:
			return nil, fmt.Errorf("container %s: env %s has a source this runner does not know", c.Name, e.Name)
		}
	}
	return env, nil
}

func runAs(pod corev1.PodSpec, c corev1.Container) string {
	var uid, gid *int64
	if pod.SecurityContext != nil {
		uid, gid = pod.SecurityContext.RunAsUser, pod.SecurityContext.RunAsGroup
	}
	if c.SecurityContext != nil {
		if c.SecurityContext.RunAsUser != nil {
			uid = c.SecurityContext.RunAsUser
		}
		if c.SecurityContext.RunAsGroup != nil {
			gid = c.SecurityContext.RunAsGroup
		}
	}
	if uid == nil {
		return ""
	}
	if gid == nil {
		return fmt.Sprint(*uid)
	}
	return fmt.Sprintf("%d:%d", *uid, *gid)
}

// volumeDir is the host folder for a pod volume (emptyDir only), owned by the pod's user.
func volumeDir(pod corev1.PodSpec, name, dir, owner string) (string, error) {
	for _, v := range pod.Volumes {
		if v.Name != name {
			continue
		}
		if v.EmptyDir == nil {
			return "", fmt.Errorf("volume %s is not an emptyDir; this runner knows only those", name)
		}
		p := filepath.Join(dir, owner+"-volume-"+name)
		if err := os.MkdirAll(p, 0o777); err != nil {
			return "", err
		}
		// A container user that is not this user writes there as the kubelet's fsGroup allows.
		_ = os.Chmod(p, 0o777)
		return p, nil
	}
	return "", fmt.Errorf("no volume %s in the pod", name)
}

func writeServiceAccountDir(dir, token string, ca []byte, ns string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, b := range map[string][]byte{"token": []byte(token), "ca.crt": ca, "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// tokenConfig is cfg's server and CA with only a bearer token: what a pod's ServiceAccount has.
func tokenConfig(cfg *rest.Config, token string) *rest.Config {
	return &rest.Config{Host: cfg.Host, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.CAData}, BearerToken: token}
}

// FreePort is a TCP port on 127.0.0.1 free at the time of asking.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
