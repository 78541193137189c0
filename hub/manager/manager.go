// Package manager wires the hub: the Git store with credentials from Secrets, and every hub
// reconciler, onto a controller-runtime manager. The hub binary and the tests use the same code.
package manager

import (
	"context"
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/gitauth"
	hubcontrollers "github.com/cellsync/cellsync/controllers/hub"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/intake"
)

// Config is the hub's configuration.
type Config struct {
	// Namespace holds the hub's Secrets.
	Namespace string
	// GitURL is the GitOps repository.
	GitURL string
	// GitSecret names the Secret with Git credentials ("" for none).
	GitSecret string
	// SigningSecret names the Secret with the commit signing key ("" to not sign).
	SigningSecret string
	AuthorName    string
	AuthorEmail   string
	// Resync is how often every app is rendered again.
	Resync time.Duration
	// Workers is how many apps render at once.
	Workers int
	// PushRetryBase is the first backoff after a rejected push (0 for the default).
	PushRetryBase time.Duration
	// StatusInterval is how often the agents' status refs are read.
	StatusInterval time.Duration
	// StaleAfter is how old a cell's heartbeat may be before the cell is Stale.
	StaleAfter time.Duration
}

// Scheme returns a scheme with the core kinds and the hub API.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = hubv1alpha1.AddToScheme(s)
	return s
}

// CacheOptions are the hub manager's cache options: objects are cached without their
// managedFields, which the hub never reads. Every Cell, Lease and app of a large fleet sits in
// the cache, and every list of Cells copies them; the field-manager records would be most of
// both.
func CacheOptions() cache.Options {
	return cache.Options{DefaultTransform: cache.TransformStripManagedFields()}
}

// Setup adds the hub reconcilers to mgr and returns the Git store they share.
func Setup(mgr ctrl.Manager, cfg Config) (*gitstore.Store, error) {
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 2 * time.Minute
	}
	reader := mgr.GetAPIReader()
	store, err := gitstore.New(gitstore.Options{
		URL:         cfg.GitURL,
		AuthorName:  cfg.AuthorName,
		AuthorEmail: cfg.AuthorEmail,
		RetryBase:   cfg.PushRetryBase,
		Credentials: func(ctx context.Context) (transport.AuthMethod, *openpgp.Entity, error) {
			return credentials(ctx, reader, cfg)
		},
	})
	if err != nil {
		return nil, err
	}
	// The intake reads status refs through stores of its own: its reads never wait on a write,
	// and what it fetches is dropped after each poll.
	statusStore := func(url string) (*gitstore.Store, error) {
		c := cfg
		c.GitURL, c.SigningSecret = url, "" // reads sign nothing
		return gitstore.New(gitstore.Options{URL: url, Credentials: func(ctx context.Context) (transport.AuthMethod, *openpgp.Entity, error) {
			return credentials(ctx, reader, c)
		}})
	}
	own, err := statusStore(cfg.GitURL)
	if err != nil {
		return nil, err
	}
	reports := intake.NewReports()
	in := intake.New(own, reports, cfg.StatusInterval)
	in.StoreFor = statusStore
	in.StatusRepos = func(ctx context.Context) (map[string][]string, error) {
		cells := &hubv1alpha1.CellList{}
		if err := mgr.GetClient().List(ctx, cells); err != nil {
			return nil, err
		}
		out := map[string][]string{}
		for _, c := range cells.Items {
			if c.Spec.StatusURL != "" && c.Spec.StatusURL != cfg.GitURL {
				out[c.Spec.StatusURL] = append(out[c.Spec.StatusURL], c.Name)
			}
		}
		return out, nil
	}
	in.StaleAfter = cfg.StaleAfter
	in.Keys = func(ctx context.Context, cell string) ([]string, error) {
		c := &hubv1alpha1.Cell{}
		if err := mgr.GetClient().Get(ctx, client.ObjectKey{Name: cell}, c); err != nil {
			return nil, client.IgnoreNotFound(err)
		}
		return c.Spec.ReportKeys, nil
	}
	if err := mgr.Add(in); err != nil {
		return nil, err
	}
	// core/v1 events: what kubectl describe and Flux's notification tooling read.
	events := mgr.GetEventRecorderFor("cellsync-hub") //nolint:staticcheck
	cells := &hubcontrollers.CellReconciler{Client: mgr.GetClient(), Recorder: events, Reports: reports, Events: in.Cells, StaleAfter: cfg.StaleAfter,
		LeaseNamespace: cfg.Namespace, APIReader: reader}
	if err := cells.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("failed to set up the Cell controller: %w", err)
	}
	if err := (&hubcontrollers.CellPlacementReconciler{Client: mgr.GetClient(), Recorder: events, Resync: cfg.Resync}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("failed to set up the CellPlacement controller: %w", err)
	}
	apps := &hubcontrollers.ServerlessAppReconciler{
		Client: mgr.GetClient(), Store: store, Recorder: events, Resync: cfg.Resync,
		Reports: reports, Events: in.Apps, StaleAfter: cfg.StaleAfter,
	}
	if err := apps.SetupWithManager(mgr, cfg.Workers); err != nil {
		return nil, fmt.Errorf("failed to set up the ServerlessApp controller: %w", err)
	}
	sources := &hubcontrollers.AppSourceReconciler{Client: mgr.GetClient(), APIReader: reader, Store: store, Recorder: events}
	if err := sources.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("failed to set up the AppSource controller: %w", err)
	}
	rollouts := &hubcontrollers.RolloutReconciler{
		Client: mgr.GetClient(), APIReader: reader, Store: store, Recorder: events, Reports: reports, Events: in.Rollouts,
		StaleAfter: cfg.StaleAfter, Resync: cfg.Resync,
	}
	if err := rollouts.SetupWithManager(mgr, cfg.Workers); err != nil {
		return nil, fmt.Errorf("failed to set up the Rollout controller: %w", err)
	}
	return store, nil
}

// credentials reads the Git and signing Secrets for one store operation. Reading them each time
// (uncached) means a corrected Secret works on the next try, with no watch on Secrets.
func credentials(ctx context.Context, r client.Reader, cfg Config) (transport.AuthMethod, *openpgp.Entity, error) {
	var auth transport.AuthMethod
	if cfg.GitSecret != "" {
		s := &corev1.Secret{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: cfg.Namespace, Name: cfg.GitSecret}, s); err != nil {
			return nil, nil, fmt.Errorf("failed to read Git credentials Secret %s/%s: %w", cfg.Namespace, cfg.GitSecret, err)
		}
		a, err := gitauth.AuthFromSecret(s, cfg.GitURL)
		if err != nil {
			return nil, nil, err
		}
		auth = a
	}
	var signer *openpgp.Entity
	if cfg.SigningSecret != "" {
		s := &corev1.Secret{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: cfg.Namespace, Name: cfg.SigningSecret}, s); err != nil {
			return nil, nil, fmt.Errorf("failed to read signing key Secret %s/%s: %w", cfg.Namespace, cfg.SigningSecret, err)
		}
		e, err := gitauth.SignerFromSecret(s)
		if err != nil {
			return nil, nil, err
		}
		signer = e
	}
	return auth, signer, nil
}
