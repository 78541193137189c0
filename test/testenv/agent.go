package testenv

import (
	"context"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cellsync/cellsync/agent/manager"
)

// StartAgent runs a real agent manager against a member cluster, serving the CellSyncs of one
// namespace, with its Git mirrors in dataDir (a new temporary folder when empty). The returned
// func stops it and waits until it has stopped.
func StartAgent(cfg *rest.Config, namespace, dataDir string) (func(), error) {
	return StartAgentAt(cfg, namespace, dataDir, nil)
}

// StartAgentAt is StartAgent with the agent's clock (time.Now when nil).
func StartAgentAt(cfg *rest.Config, namespace, dataDir string, now func() time.Time) (func(), error) {
	if dataDir == "" {
		d, err := os.MkdirTemp("", "cellsync-agent-")
		if err != nil {
			return nil, err
		}
		dataDir = d
	}
	cacheOpts, clientOpts := manager.CacheOptions(namespace)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 manager.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cacheOpts,
		Client:                 clientOpts,
		// Tests run several agents in one process, each for its own namespace.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, err
	}
	if err := manager.Setup(mgr, manager.Config{DataDir: dataDir, HealthPoll: 100 * time.Millisecond, Namespace: namespace, Now: now}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "agent manager stopped:", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
