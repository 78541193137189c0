// Command hub runs the cellsync hub manager: it renders every ServerlessApp into the Git branch
// of each cell it is placed on.
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

	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/controllers/version"
	"github.com/cellsync/cellsync/hub/manager"
)

func main() {
	var (
		cfg           manager.Config
		metricsAddr   string
		probeAddr     string
		pprofAddr     string
		leaderElect   bool
		leaderElectNS string
	)
	flag.StringVar(&cfg.GitURL, "git-url", "", "URL of the GitOps repository (https://, http:// or ssh://).")
	flag.StringVar(&cfg.GitSecret, "git-secret", "", "Secret in --namespace with Git credentials (username/password, bearerToken, or identity/known_hosts).")
	flag.StringVar(&cfg.SigningSecret, "signing-secret", "", "Secret in --namespace with an armored OpenPGP key (git.asc, passphrase) to sign commits.")
	flag.StringVar(&cfg.Namespace, "namespace", envOr("POD_NAMESPACE", "cellsync-system"), "Namespace of the hub's Secrets.")
	flag.StringVar(&cfg.AuthorName, "git-author-name", "cellsync hub", "Author name of the hub's commits.")
	flag.StringVar(&cfg.AuthorEmail, "git-author-email", "hub@cellsync.io", "Author email of the hub's commits.")
	flag.DurationVar(&cfg.Resync, "resync-interval", 10*time.Minute, "How often every app is rendered again, repairing branches changed by hand.")
	flag.IntVar(&cfg.Workers, "workers", 2, "How many apps render at once.")
	flag.DurationVar(&cfg.StatusInterval, "status-interval", 10*time.Second, "How often the agents' status/<cell> refs are read (one ref listing each time).")
	flag.DurationVar(&cfg.StaleAfter, "stale-after", 2*time.Minute, "A cell whose last heartbeat is older than this is Stale and never Ready.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the metrics endpoint; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the health probes.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0", "Address of Go's profiling endpoints (/debug/pprof); 0 disables them.")
	flag.BoolVar(&leaderElect, "leader-elect", true, "Elect a leader so that only one hub replica writes Git.")
	flag.StringVar(&leaderElectNS, "leader-election-namespace", "", "Namespace of the leader election lease (default: the in-cluster namespace or --namespace).")
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println("hub", version.Get())
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	if cfg.GitURL == "" {
		log.Error(nil, "The --git-url flag is required")
		os.Exit(2)
	}
	if leaderElectNS == "" {
		leaderElectNS = cfg.Namespace
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  manager.Scheme(),
		Cache:                   manager.CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "hub.cellsync.io",
		LeaderElectionNamespace: leaderElectNS,
	})
	if err != nil {
		log.Error(err, "Unable to create the manager")
		os.Exit(1)
	}
	if _, err := manager.Setup(mgr, cfg); err != nil {
		log.Error(err, "Unable to set up the hub")
		os.Exit(1)
	}
	_ = mgr.AddHealthzCheck("healthz", healthz.Ping)
	_ = mgr.AddReadyzCheck("readyz", healthz.Ping)
	log.Info("Starting the hub", "version", version.Get().Version, "commit", version.Get().Commit, "repository", gitauth.RedactURL(cfg.GitURL))
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "The manager stopped with an error")
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
