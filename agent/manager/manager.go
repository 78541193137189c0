// Package manager wires the agent onto a controller-runtime manager; the agent binary and the
// tests share it.
package manager

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	agentcontrollers "github.com/cellsync/cellsync/controllers/agent"
	"github.com/cellsync/cellsync/controllers/version"
)

// Config is the agent's configuration.
type Config struct {
	// DataDir holds the Git mirrors.
	DataDir string
	// HealthPoll is how often health is polled while waiting.
	HealthPoll time.Duration
	// Namespace is the only namespace whose CellSyncs the agent serves (its own).
	Namespace string
	// DefaultServiceAccount is impersonated for CellSyncs without spec.serviceAccountName.
	DefaultServiceAccount string
	// Workers is how many CellSyncs sync at once.
	Workers int
	// CommitDeadline bounds fetching, reading and applying one commit.
	CommitDeadline time.Duration
	// Now is the agent's clock, for its heartbeat times (time.Now when nil).
	Now func() time.Time
}

// DefaultServiceAccount is the ServiceAccount a CellSync applies as when it names none.
const DefaultServiceAccount = "cellsync-applier"

// Scheme returns a scheme with core/v1 and the member API: all the agent reads typed. What it
// applies goes through unstructured objects, so it links no other API group (a smaller binary
// and a smaller resident set).
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	_ = agentv1alpha1.AddToScheme(s)
	return s
}

// CacheOptions are the agent's cache: CellSyncs of its own namespace only. Secrets are read
// from the apiserver when needed, never cached: the agent's role may only get them by name (no
// list or watch of every Secret in its namespace), and no Secret sits in its memory.
func CacheOptions(namespace string) (cache.Options, client.Options) {
	return cache.Options{DefaultNamespaces: map[string]cache.Config{namespace: {}}},
		client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}}
}

// Setup adds the agent reconcilers to mgr.
func Setup(mgr ctrl.Manager, cfg Config) error {
	if cfg.DataDir == "" {
		return fmt.Errorf("the agent needs a data directory for its Git mirrors")
	}
	if cfg.Namespace == "" {
		return fmt.Errorf("the agent needs the namespace whose CellSyncs it serves (--namespace, or POD_NAMESPACE)")
	}
	if cfg.DefaultServiceAccount == "" {
		cfg.DefaultServiceAccount = DefaultServiceAccount
	}
	r := &agentcontrollers.CellSyncReconciler{
		Client:     mgr.GetClient(),
		Config:     mgr.GetConfig(),
		DataDir:    cfg.DataDir,
		Recorder:   mgr.GetEventRecorderFor("cellsync-agent"), //nolint:staticcheck // core/v1 events, as kubectl describe shows
		Version:    version.Get().Version,
		HealthPoll: cfg.HealthPoll,

		Namespace:             cfg.Namespace,
		DefaultServiceAccount: cfg.DefaultServiceAccount,
		Workers:               cfg.Workers,
		CommitDeadline:        cfg.CommitDeadline,
		Now:                   cfg.Now,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("failed to set up the CellSync controller: %w", err)
	}
	return nil
}
