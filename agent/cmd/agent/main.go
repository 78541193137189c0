// Command agent runs the cellsync agent in a member cluster: it pulls its cells' branches over an
// outbound Git connection, applies them, and reports back through Git.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cellsync/cellsync/agent/manager"
	"github.com/cellsync/cellsync/controllers/version"
)

func main() {
	var (
		cfg         manager.Config
		metricsAddr string
		probeAddr   string
		leaderElect bool
		leaderNS    string
		pprofAddr   string
	)
	flag.StringVar(&cfg.DataDir, "data-dir", "/var/lib/cellsync", "Directory for the Git mirrors of the cell branches.")
	flag.StringVar(&cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "The only namespace whose CellSyncs the agent serves (default: its own, from POD_NAMESPACE).")
	flag.StringVar(&cfg.DefaultServiceAccount, "default-service-account", manager.DefaultServiceAccount, "ServiceAccount (in the CellSync's namespace) impersonated for CellSyncs without spec.serviceAccountName.")
	flag.IntVar(&cfg.Workers, "workers", 4, "How many CellSyncs sync at once.")
	flag.DurationVar(&cfg.CommitDeadline, "commit-deadline", 5*time.Minute, "Deadline for fetching, reading and applying one commit.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the metrics endpoint; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the health probes.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "", "Address of the pprof endpoint; empty disables it.")
	flag.BoolVar(&leaderElect, "leader-elect", true, "Elect a leader so that only one agent replica applies.")
	flag.StringVar(&leaderNS, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the leader election lease.")
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println("agent", version.Get())
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	if cfg.Namespace == "" {
		log.Error(nil, "The agent needs the namespace whose CellSyncs it serves: set --namespace or POD_NAMESPACE")
		os.Exit(1)
	}
	if leaderNS == "" {
		leaderNS = cfg.Namespace
	}
	cacheOpts, clientOpts := manager.CacheOptions(cfg.Namespace)
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  manager.Scheme(),
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "agent.cellsync.io",
		LeaderElectionNamespace: leaderNS,
		PprofBindAddress:        pprofAddr,
		Cache:                   cacheOpts,
		Client:                  clientOpts,
	})
	if err != nil {
		log.Error(err, "Unable to create the manager")
		os.Exit(1)
	}
	if err := manager.Setup(mgr, cfg); err != nil {
		log.Error(err, "Unable to set up the agent")
		os.Exit(1)
	}
	_ = mgr.AddHealthzCheck("healthz", healthz.Ping)
	_ = mgr.AddReadyzCheck("readyz", healthz.Ping)
	log.Info("Starting the agent", "version", version.Get().Version, "commit", version.Get().Commit)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "The manager stopped with an error")
		os.Exit(1)
	}
}
