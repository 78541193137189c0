package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/controllers/version"
)

// agentInstall is `kustomize build config/agent`, written by `make manifests`; a test checks
// that it is current.
//
//go:embed agent-install.yaml
var agentInstall []byte

const (
	fieldOwner = "kubectl-cells"
	// labelManagedBy marks what join made, so that unjoin removes exactly that.
	labelManagedBy = "app.kubernetes.io/managed-by"
	// labelCell names the cell a joined object belongs to.
	labelCell = "cellsync.io/cell"
	// agentDeployment is the agent's Deployment in config/agent.
	agentDeployment = "cellsync-agent"
	applierRole     = "cellsync-applier"
)

type joinOptions struct {
	namespaces                   []string
	gitURL, branch, statusURL    string
	gitUsername, gitPasswordFile string
	gitTokenFile                 string
	sshKeyFile, knownHostsFile   string
	cluster                      string
	runtime                      string
	labels                       map[string]string
	hubKubeconfig, hubContext    string
	agentNamespace, agentImage   string
	prometheusAddress            string
	interval, heartbeat          time.Duration
	signReports, installAgent    bool
	skipGitCheck, dryRun         bool
	timeout                      time.Duration
}

func newJoinCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := joinOptions{}
	cmd := &cobra.Command{
		Use:   "join CELL --namespaces NS[,NS] --git-url URL",
		Short: "Make the cluster of the current kubeconfig a member hosting CELL",
		Long: `join makes the cluster that the kubeconfig flags name host the cell CELL:

  - installs the agent (config/agent) when the cluster has none;
  - creates the Git credentials Secret, and with --sign-reports the cell's report signing key;
  - creates a ServiceAccount for the cell, bound to the shipped cellsync-applier ClusterRole in
    each of the cell's namespaces (which must exist), and the CellSync that the agent serves;
  - creates the Cell on the hub (--hub-kubeconfig), or prints its YAML to commit to main.

Everything is checked first (the cluster, the namespaces, the Git URL and credentials, the hub);
on any error nothing is created. Running join again with the same flags changes nothing.
--dry-run prints every object instead of applying it (Secret values are not printed).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runJoin(ctxOf(cmd), flags, args[0], o, streams.Out)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.namespaces, "namespaces", nil, "The namespaces the cell owns in this cluster (they must exist).")
	f.StringVar(&o.gitURL, "git-url", "", "URL of the GitOps repository (https://, http:// or ssh://).")
	f.StringVar(&o.branch, "branch", "", "The cell branch (default cells/CELL).")
	f.StringVar(&o.statusURL, "status-url", "", "A status repository of the cell's own (for example one of a set of shards), where the agent pushes its reports instead of --git-url; same credentials.")
	f.StringVar(&o.gitUsername, "git-username", "", "Git username (with --git-password-file).")
	f.StringVar(&o.gitPasswordFile, "git-password-file", "", "File holding the Git password or token (with --git-username).")
	f.StringVar(&o.gitTokenFile, "git-bearer-token-file", "", "File holding a Git bearer token.")
	f.StringVar(&o.sshKeyFile, "ssh-key-file", "", "Private SSH key for ssh:// URLs.")
	f.StringVar(&o.knownHostsFile, "known-hosts-file", "", "known_hosts for ssh:// URLs.")
	f.StringVar(&o.cluster, "member-cluster", "", "Name of this cluster on the hub (the Cell's spec.cluster; default: the kubeconfig's cluster name).")
	f.StringVar(&o.runtime, "runtime", string(hubv1alpha1.RuntimeKnative), "What runs the cell's apps: knative or kubernetes.")
	f.StringToStringVar(&o.labels, "cell-labels", nil, "Labels of the Cell, for placements (for example cellsync.io/region=eu,cellsync.io/env=prod).")
	f.StringVar(&o.hubKubeconfig, "hub-kubeconfig", "", "Kubeconfig of the hub; without it the Cell is printed, to commit to main.")
	f.StringVar(&o.hubContext, "hub-context", "", "Context in --hub-kubeconfig.")
	f.StringVar(&o.agentNamespace, "agent-namespace", "cellsync-system", "Namespace of the agent in this cluster.")
	f.StringVar(&o.agentImage, "agent-image", "ghcr.io/cellsync/agent:"+version.Get().Version, "Image of the agent, when join installs it.")
	f.BoolVar(&o.installAgent, "install-agent", true, "Install the agent when the cluster has none.")
	f.StringVar(&o.prometheusAddress, "prometheus-address", "", "This cluster's Prometheus (http://host:port), against which the agent measures canary analyses.")
	f.BoolVar(&o.signReports, "sign-reports", false, "Give the cell a report signing key; the hub then trusts only reports signed with it.")
	f.DurationVar(&o.interval, "interval", time.Minute, "How often the agent polls the cell branch.")
	f.DurationVar(&o.heartbeat, "heartbeat-interval", 30*time.Second, "How often the agent reports while nothing changes.")
	f.BoolVar(&o.skipGitCheck, "skip-git-check", false, "Do not list the repository before joining (when this machine cannot reach it).")
	f.BoolVar(&o.dryRun, "dry-run", false, "Print what join would do, and do nothing.")
	f.DurationVar(&o.timeout, "timeout", time.Minute, "How long to wait for the API to serve the agent's CRDs.")
	_ = cmd.MarkFlagRequired("namespaces")
	_ = cmd.MarkFlagRequired("git-url")
	return cmd
}

// cluster is one apiserver join talks to.
type cluster struct {
	role   string // "member" or "hub"
	host   string
	config *rest.Config
	client client.Client
}

func newCluster(role string, cfg *rest.Config) (*cluster, error) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = apiextensionsv1.AddToScheme(scheme)
	_ = agentv1alpha1.AddToScheme(scheme)
	_ = hubv1alpha1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("the %s cluster at %s: %w", role, cfg.Host, err)
	}
	return &cluster{role: role, host: cfg.Host, config: cfg, client: c}, nil
}

// serves tells whether the cluster serves a group version, and fails when it cannot be asked.
func (c *cluster) serves(groupVersion, resource string) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(c.config)
	if err != nil {
		return false, err
	}
	list, err := dc.ServerResourcesForGroupVersion(groupVersion)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cannot reach the %s cluster at %s: %w", c.role, c.host, err)
	}
	for _, r := range list.APIResources {
		if r.Name == resource {
			return true, nil
		}
	}
	return false, nil
}

// plan is what join applies: objects in the member cluster, then on the hub.
type plan struct {
	member, hub []*unstructured.Unstructured
	// cellYAML is the Cell to commit to main when there is no hub kubeconfig.
	cellYAML string
}

func runJoin(ctx context.Context, flags *genericclioptions.ConfigFlags, cell string, o joinOptions, out io.Writer) error {
	member, hub, err := connectBoth(flags, o.hubKubeconfig, o.hubContext)
	if err != nil {
		return err
	}
	if o.cluster == "" {
		if o.cluster, err = clusterName(flags); err != nil {
			return err
		}
	}
	p, err := planJoin(ctx, member, hub, cell, o)
	if err != nil {
		return err
	}
	if o.dryRun {
		return printPlan(out, member, hub, p)
	}
	if err := applyAll(ctx, member, p.member, o.timeout, out); err != nil {
		return err
	}
	if hub != nil {
		if err := applyAll(ctx, hub, p.hub, o.timeout, out); err != nil {
			return err
		}
		fmt.Fprintf(out, "\nCell %s joined. Its agent reports within %s; watch it with\n  kubectl --kubeconfig %s get cell %s\n", cell, o.heartbeat, o.hubKubeconfig, cell)
		return nil
	}
	fmt.Fprintf(out, "\nThe member side of cell %s is ready. Commit this Cell to the repository's main branch\n(an AppSource with kinds [Cell] applies it), or kubectl apply it on the hub:\n\n%s", cell, p.cellYAML)
	return nil
}

func connectBoth(flags *genericclioptions.ConfigFlags, hubKubeconfig, hubContext string) (member, hub *cluster, err error) {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("cannot load the member cluster's kubeconfig: %w", err)
	}
	if member, err = newCluster("member", cfg); err != nil {
		return nil, nil, err
	}
	if hubKubeconfig == "" {
		return member, nil, nil
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: hubKubeconfig}
	hcfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: hubContext}).ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("cannot load the hub kubeconfig %s: %w", hubKubeconfig, err)
	}
	if hub, err = newCluster("hub", hcfg); err != nil {
		return nil, nil, err
	}
	return member, hub, nil
}

// clusterName is the kubeconfig's cluster name for the current context, a DNS label.
func clusterName(flags *genericclioptions.ConfigFlags) (string, error) {
	raw, err := flags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return "", err
	}
	ctxName := raw.CurrentContext
	if flags.Context != nil && *flags.Context != "" {
		ctxName = *flags.Context
	}
	name := ""
	if c, ok := raw.Contexts[ctxName]; ok {
		name = c.Cluster
	}
	if flags.ClusterName != nil && *flags.ClusterName != "" {
		name = *flags.ClusterName
	}
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return "", fmt.Errorf("the kubeconfig's cluster name %q cannot name the member on the hub (%s): set --member-cluster", name, strings.Join(errs, "; "))
	}
	return name, nil
}

// planJoin checks everything join depends on and returns the objects it would apply. It
// changes nothing.
func planJoin(ctx context.Context, member, hub *cluster, cell string, o joinOptions) (*plan, error) {
	if errs := validation.IsDNS1123Label(cell); len(errs) > 0 {
		return nil, fmt.Errorf("%q is not a valid cell name: %s", cell, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(o.cluster); len(errs) > 0 {
		return nil, fmt.Errorf("--member-cluster %q is not a valid cluster name: %s", o.cluster, strings.Join(errs, "; "))
	}
	if len(o.namespaces) == 0 {
		return nil, errors.New("--namespaces is required: the namespaces the cell owns in this cluster")
	}
	if o.runtime != string(hubv1alpha1.RuntimeKnative) && o.runtime != string(hubv1alpha1.RuntimeKubernetes) {
		return nil, fmt.Errorf("--runtime %q: use knative or kubernetes", o.runtime)
	}
	if err := gitauth.CheckURL(o.gitURL); err != nil {
		return nil, err
	}
	if o.statusURL != "" {
		if err := gitauth.CheckURL(o.statusURL); err != nil {
			return nil, fmt.Errorf("--status-url: %w", err)
		}
		if gitauth.IsSSH(o.statusURL) != gitauth.IsSSH(o.gitURL) {
			return nil, fmt.Errorf("--status-url %s and --git-url %s take different credentials (SSH and HTTP): the agent uses one Secret for both", gitauth.RedactURL(o.statusURL), gitauth.RedactURL(o.gitURL))
		}
	}
	creds, err := o.credentials()
	if err != nil {
		return nil, err
	}

	// The member: reachable, holding the cell's namespaces, and (for knative cells) Knative.
	for _, ns := range o.namespaces {
		err := member.client.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("namespace %q does not exist in the member cluster at %s: create it first (the cell owns it; join does not make namespaces), or check that the kubeconfig names the right cluster", ns, member.host)
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read namespace %q in the member cluster at %s: %w", ns, member.host, err)
		}
	}
	if o.runtime == string(hubv1alpha1.RuntimeKnative) {
		ok, err := member.serves("serving.knative.dev/v1", "services")
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("the member cluster at %s does not serve Knative Serving (serving.knative.dev/v1): is the kubeconfig the member's? Install Knative Serving there, or join with --runtime kubernetes", member.host)
		}
	}
	// The hub: it serves the hub API, and the cell is not another cluster's.
	var keepKeys []string
	if hub != nil {
		ok, err := hub.serves(hubv1alpha1.GroupVersion.String(), "cells")
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("the cluster at %s (--hub-kubeconfig) does not serve the cellsync hub API (%s): is it the hub's kubeconfig?", hub.host, hubv1alpha1.GroupVersion)
		}
		existing := &hubv1alpha1.Cell{}
		err = hub.client.Get(ctx, client.ObjectKey{Name: cell}, existing)
		switch {
		case err == nil && existing.Spec.Cluster != o.cluster:
			return nil, fmt.Errorf("cell %s is already hosted by cluster %q on the hub, not %q: unjoin it there first, or pick another cell name", cell, existing.Spec.Cluster, o.cluster)
		case err == nil:
			keepKeys = existing.Spec.ReportKeys
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("cannot read Cell %s on the hub at %s: %w", cell, hub.host, err)
		}
	}
	// The repository: listed with the same credentials the agent gets.
	if !o.skipGitCheck {
		if err := checkGit(ctx, o.gitURL, creds); err != nil {
			return nil, err
		}
		if o.statusURL != "" {
			if err := checkGit(ctx, o.statusURL, creds); err != nil {
				return nil, fmt.Errorf("--status-url: %w", err)
			}
		}
	}

	p := &plan{}
	agentNS := o.agentNamespace
	installed, err := agentInstalled(ctx, member, agentNS)
	if err != nil {
		return nil, err
	}
	if !installed && o.installAgent {
		objs, err := agentObjects(agentNS, o.agentImage)
		if err != nil {
			return nil, err
		}
		p.member = append(p.member, objs...)
	}
	cellLabels := map[string]any{labelManagedBy: fieldOwner, labelCell: cell}
	sa := "cell-" + cell
	if len(sa) > 63 {
		sa = sa[:63]
	}
	p.member = append(p.member, obj("v1", "ServiceAccount", agentNS, sa, cellLabels, nil))
	for _, ns := range o.namespaces {
		rb := obj("rbac.authorization.k8s.io/v1", "RoleBinding", ns, "cellsync-cell-"+cell, cellLabels, nil)
		rb.Object["roleRef"] = map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": applierRole}
		rb.Object["subjects"] = []any{map[string]any{"kind": "ServiceAccount", "namespace": agentNS, "name": sa}}
		p.member = append(p.member, rb)
	}
	spec := map[string]any{
		"cell": cell, "url": o.gitURL, "interval": o.interval.String(), "heartbeatInterval": o.heartbeat.String(),
		"prune": true, "serviceAccountName": sa,
		"policy": map[string]any{"namespaces": toAny(o.namespaces)},
	}
	if o.branch != "" {
		spec["branch"] = o.branch
	}
	if o.statusURL != "" {
		spec["statusURL"] = o.statusURL
	}
	if o.prometheusAddress != "" {
		if u, err := url.Parse(o.prometheusAddress); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--prometheus-address %q is not an http(s) URL", o.prometheusAddress)
		}
		spec["analysis"] = map[string]any{"prometheus": map[string]any{"address": o.prometheusAddress}}
	}
	if len(creds) > 0 {
		name := "cellsync-git-" + cell
		s := obj("v1", "Secret", agentNS, name, cellLabels, nil)
		s.Object["type"] = "Opaque"
		s.Object["stringData"] = creds
		p.member = append(p.member, s)
		spec["secretRef"] = map[string]any{"name": name}
	}
	var reportKeys []string
	if o.signReports {
		name := "cellsync-report-key-" + cell
		private, public, err := signingKey(ctx, member, agentNS, name, cell)
		if err != nil {
			return nil, err
		}
		s := obj("v1", "Secret", agentNS, name, cellLabels, nil)
		s.Object["type"] = "Opaque"
		s.Object["stringData"] = map[string]any{gitauth.SecretSigningKey: string(private)}
		p.member = append(p.member, s)
		spec["reportSigning"] = map[string]any{"secretRef": map[string]any{"name": name}}
		reportKeys = []string{public}
		// A key the Cell already trusts (a rotation in progress) stays trusted.
		for _, k := range keepKeys {
			if strings.TrimSpace(k) != strings.TrimSpace(public) && len(reportKeys) < 4 {
				reportKeys = append(reportKeys, k)
			}
		}
	}
	p.member = append(p.member, obj(agentv1alpha1.GroupVersion.String(), "CellSync", agentNS, cell, cellLabels, spec))

	hubLabels := map[string]any{labelManagedBy: fieldOwner}
	for k, v := range o.labels {
		hubLabels[k] = v
	}
	cellSpec := map[string]any{"cluster": o.cluster, "namespaces": toAny(o.namespaces), "runtime": o.runtime}
	if o.branch != "" {
		cellSpec["branch"] = o.branch
	}
	if o.statusURL != "" {
		cellSpec["statusURL"] = o.statusURL
	}
	if len(reportKeys) > 0 {
		cellSpec["reportKeys"] = toAny(reportKeys)
	}
	c := obj(hubv1alpha1.GroupVersion.String(), "Cell", "", cell, hubLabels, cellSpec)
	p.hub = append(p.hub, c)
	b, err := yaml.Marshal(c.Object)
	if err != nil {
		return nil, err
	}
	p.cellYAML = string(b)
	return p, nil
}

// credentials reads the Git credentials named by the flags into Secret data.
func (o joinOptions) credentials() (map[string]any, error) {
	read := func(flag, path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("--%s: %w", flag, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	data := map[string]any{}
	switch {
	case o.gitUsername != "" || o.gitPasswordFile != "":
		if o.gitUsername == "" || o.gitPasswordFile == "" {
			return nil, errors.New("--git-username and --git-password-file go together")
		}
		pw, err := read("git-password-file", o.gitPasswordFile)
		if err != nil {
			return nil, err
		}
		data[gitauth.SecretUsername], data[gitauth.SecretPassword] = o.gitUsername, pw
	case o.gitTokenFile != "":
		tok, err := read("git-bearer-token-file", o.gitTokenFile)
		if err != nil {
			return nil, err
		}
		data[gitauth.SecretBearerToken] = tok
	}
	if o.sshKeyFile != "" || o.knownHostsFile != "" {
		if o.sshKeyFile == "" || o.knownHostsFile == "" {
			return nil, errors.New("--ssh-key-file and --known-hosts-file go together")
		}
		key, err := os.ReadFile(o.sshKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--ssh-key-file: %w", err)
		}
		kh, err := os.ReadFile(o.knownHostsFile)
		if err != nil {
			return nil, fmt.Errorf("--known-hosts-file: %w", err)
		}
		data[gitauth.SecretIdentity], data[gitauth.SecretKnownHosts] = string(key), string(kh)
	}
	if gitauth.IsSSH(o.gitURL) && data[gitauth.SecretIdentity] == nil {
		return nil, fmt.Errorf("%s is an SSH URL: give --ssh-key-file and --known-hosts-file", gitauth.RedactURL(o.gitURL))
	}
	return data, nil
}

// checkGit lists the repository's refs with the agent's credentials.
func checkGit(ctx context.Context, url string, creds map[string]any) error {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "join"}, Data: map[string][]byte{}}
	for k, v := range creds {
		secret.Data[k] = []byte(v.(string))
	}
	var auth transport.AuthMethod
	if len(creds) > 0 {
		var err error
		if auth, err = gitauth.AuthFromSecret(secret, url); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	remote := git.NewRemote(memory.NewStorage(), &gitconfig.RemoteConfig{Name: "origin", URLs: []string{url}})
	_, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err == nil || errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return nil
	}
	err = gitauth.Classify(err, url)
	var authErr *gitauth.AuthError
	if errors.As(err, &authErr) {
		return fmt.Errorf("the Git server refused the credentials for %s: %w (check --git-username/--git-password-file)", gitauth.RedactURL(url), err)
	}
	return fmt.Errorf("cannot list the repository %s from here: %w (use --skip-git-check if only the member cluster can reach it)", gitauth.RedactURL(url), err)
}

// agentInstalled tells whether the member runs the agent already.
func agentInstalled(ctx context.Context, member *cluster, ns string) (bool, error) {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("apps/v1")
	u.SetKind("Deployment")
	err := member.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: agentDeployment}, u)
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("cannot look for the agent in the member cluster at %s: %w", member.host, err)
	}
}

// agentObjects is the shipped agent install, in namespace ns and with image, marked as made by
// join.
func agentObjects(ns, image string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(agentInstall), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("the embedded agent install: %w", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		labels := u.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[labelManagedBy] = fieldOwner
		u.SetLabels(labels)
		if u.GetNamespace() != "" {
			u.SetNamespace(ns)
		}
		if u.GetKind() == "Namespace" {
			u.SetName(ns)
		}
		if u.GetKind() == "Deployment" {
			containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			for _, c := range containers {
				c.(map[string]any)["image"] = image
			}
			_ = unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers")
		}
		if subjects, ok, _ := unstructured.NestedSlice(u.Object, "subjects"); ok {
			for _, s := range subjects {
				if m := s.(map[string]any); m["namespace"] != nil {
					m["namespace"] = ns
				}
			}
			_ = unstructured.SetNestedSlice(u.Object, subjects, "subjects")
		}
		objs = append(objs, u)
	}
	return objs, nil
}

// signingKey is the cell's report key: the one its Secret holds already, or a new one.
func signingKey(ctx context.Context, member *cluster, ns, name, cell string) ([]byte, string, error) {
	s := &corev1.Secret{}
	err := member.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)
	if err == nil && len(s.Data[gitauth.SecretSigningKey]) > 0 {
		pub, err := gitauth.PublicKeyOf(s.Data[gitauth.SecretSigningKey])
		if err != nil {
			return nil, "", fmt.Errorf("secret %s/%s holds no readable key under %s: %w", ns, name, gitauth.SecretSigningKey, err)
		}
		return s.Data[gitauth.SecretSigningKey], pub, nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, "", err
	}
	return gitauth.NewSigningKey("cellsync cell " + cell)
}

func obj(apiVersion, kind, ns, name string, labels map[string]any, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "labels": labels},
	}}
	if ns != "" {
		u.SetNamespace(ns)
	}
	if spec != nil {
		u.Object["spec"] = spec
	}
	return u
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// applyAll server-side applies objs in order, waiting for CRDs to be served before the objects
// of their kinds, and says for each whether it was created, configured or unchanged.
func applyAll(ctx context.Context, c *cluster, objs []*unstructured.Unstructured, timeout time.Duration, out io.Writer) error {
	for _, u := range objs {
		if err := waitForKind(ctx, c, u, timeout); err != nil {
			return err
		}
		before := &unstructured.Unstructured{}
		before.SetGroupVersionKind(u.GroupVersionKind())
		err := c.client.Get(ctx, client.ObjectKeyFromObject(u), before)
		if err != nil && !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
			return fmt.Errorf("%s: cannot read %s: %w", c.role, describe(u), err)
		}
		oldRV, oldGen := before.GetResourceVersion(), before.GetGeneration()
		applied := u.DeepCopy()
		if err := c.client.Patch(ctx, applied, client.Apply, client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("%s cluster at %s: cannot apply %s: %w", c.role, c.host, describe(u), err)
		}
		what := "created"
		switch {
		case oldRV == "":
		case oldRV == applied.GetResourceVersion():
			what = "unchanged"
		// A status write (a heartbeat) between the read and the apply moves the
		// resourceVersion, not the generation.
		case oldGen > 0 && oldGen == applied.GetGeneration():
			what = "unchanged"
		default:
			what = "configured"
		}
		fmt.Fprintf(out, "%s: %s %s\n", c.role, describe(u), what)
		if u.GetKind() == "CustomResourceDefinition" {
			if err := waitEstablished(ctx, c, u.GetName(), timeout); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitForKind waits until the apiserver serves u's kind (a CRD applied just before).
func waitForKind(ctx context.Context, c *cluster, u *unstructured.Unstructured, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.client.RESTMapper().RESTMapping(u.GroupVersionKind().GroupKind(), u.GroupVersionKind().Version)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s cluster at %s does not serve %s after %s: %w", c.role, c.host, u.GroupVersionKind(), timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func waitEstablished(ctx context.Context, c *cluster, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.client.Get(ctx, client.ObjectKey{Name: name}, crd); err == nil {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CRD %s is not established after %s", name, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func describe(u *unstructured.Unstructured) string {
	kind := strings.ToLower(u.GetKind())
	if g := u.GroupVersionKind().Group; g != "" {
		kind += "." + g
	}
	if ns := u.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s/%s (namespace %s)", kind, u.GetName(), ns)
	}
	return kind + "/" + u.GetName()
}

// printPlan prints the objects join would apply; Secret values are left out.
func printPlan(out io.Writer, member, hub *cluster, p *plan) error {
	fmt.Fprintf(out, "# kubectl cells join --dry-run: nothing was changed.\n# In the member cluster at %s:\n", member.host)
	if err := printObjects(out, p.member); err != nil {
		return err
	}
	if hub != nil {
		fmt.Fprintf(out, "# On the hub at %s:\n", hub.host)
		return printObjects(out, p.hub)
	}
	fmt.Fprintf(out, "# No --hub-kubeconfig: this Cell is to be committed to main:\n---\n%s", p.cellYAML)
	return nil
}

func printObjects(out io.Writer, objs []*unstructured.Unstructured) error {
	for _, u := range objs {
		u = u.DeepCopy()
		if data, ok := u.Object["stringData"].(map[string]any); ok {
			keys := make([]string, 0, len(data))
			for k := range data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			redacted := map[string]any{}
			for _, k := range keys {
				redacted[k] = "<hidden>"
			}
			u.Object["stringData"] = redacted
		}
		b, err := yaml.Marshal(u.Object)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "---\n%s", b)
	}
	return nil
}
