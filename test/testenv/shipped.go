package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// ShippedManifests reads a config/ folder whose kustomization.yaml is a plain list of resource
// files (config/rbac, config/agent/rbac), as `kustomize build` would give them.
func ShippedManifests(dir string) ([]*unstructured.Unstructured, error) {
	root := filepath.Join(RepoRoot(), dir)
	b, err := os.ReadFile(filepath.Join(root, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range k.Resources {
		b, err := os.ReadFile(filepath.Join(root, r))
		if err != nil {
			return nil, fmt.Errorf("%s: only plain resource files are read here: %w", dir, err)
		}
		objs, err := DecodeManifests(b)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", dir, r, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// StartAsServiceAccount installs the shipped RBAC in rbacDir into the cluster, mints a token for
// ServiceAccount ns/sa, and runs the command's binary with a kubeconfig holding only that token
// and the given args; its output goes to logPath. The process is killed if this one dies.
func StartAsServiceAccount(cfg *rest.Config, rbacDir, ns, sa, pkg, logPath string, args ...string) (*Process, error) {
	ctx := context.Background()
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	objs, err := ShippedManifests(rbacDir)
	if err != nil {
		return nil, err
	}
	if err := ApplyManifests(ctx, c, objs, false); err != nil {
		return nil, fmt.Errorf("installing %s: %w", rbacDir, err)
	}
	token, err := MintToken(ctx, cfg, ns, sa)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o750); err != nil {
		return nil, err
	}
	kc := strings.TrimSuffix(logPath, ".log") + ".kubeconfig"
	if err := WriteKubeconfig(tokenConfig(cfg, token), kc); err != nil {
		return nil, err
	}
	return startBinary(pkg, logPath, append([]string{"--kubeconfig=" + kc}, args...)...)
}
