package hub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/hub/manager"
	"github.com/cellsync/cellsync/test/testenv"
)

const (
	hubNamespace = "cellsync-system"
	gitUser      = "hub"
	gitPassword  = "correct-horse"
	repoName     = "gitops"
)

// The suite's shared parts: one hub apiserver, one Git server, one hub manager.
var (
	k8s        client.Client
	gitServer  *testenv.GitServer
	signingKey *openpgp.Entity
	repoURL    string
	hubCluster *testenv.Cluster
)

// staleAfter is the hub's heartbeat threshold in this suite. The simulated agents report once per
// change rather than heartbeating, so a report must still be fresh when a hub on a loaded
// machine reads it; tests that need a stale cell report an old heartbeat (or, in the intake
// test, wait for one).
const staleAfter = 15 * time.Second

func TestMain(m *testing.M) {
	// client-go's cache mutation detector fails the suite when a controller changes an object in
	// the informers' cache (the controllers read listed Cells without copies). It is switched on
	// by the environment when the process starts, so the suite starts itself again with it.
	if os.Getenv(mutationDetector) == "" {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Env = append(os.Environ(), mutationDetector+"=true")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		var exit *exec.ExitError
		if err := cmd.Run(); errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		} else if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(run(m))
}

const mutationDetector = "KUBE_CACHE_MUTATION_DETECTOR"

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(zapcore.Level(zapLevel()))))
	cluster, err := testenv.StartCluster(testenv.ClusterOptions{HubCRDs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hubCluster = cluster
	defer func() { _ = cluster.Stop() }()
	gitServer, err = testenv.StartGitServer(gitUser, gitPassword)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer gitServer.Close()
	url, err := gitServer.CreateRepo(repoName)
	repoURL = url
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	mgr, err := ctrl.NewManager(cluster.Config, ctrl.Options{
		Scheme:                  manager.Scheme(),
		Cache:                   manager.CacheOptions(),
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		LeaderElection:          true,
		LeaderElectionID:        "hub.cellsync.io",
		LeaderElectionNamespace: hubNamespace,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	k8s = mgr.GetClient()
	direct, err := client.New(cluster.Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := seedHubNamespace(direct); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := manager.Setup(mgr, manager.Config{
		Namespace:      hubNamespace,
		GitURL:         url,
		GitSecret:      "git-credentials",
		SigningSecret:  "signing-key",
		Resync:         10 * time.Minute,
		PushRetryBase:  20 * time.Millisecond,
		StatusInterval: 300 * time.Millisecond,
		StaleAfter:     staleAfter,
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager stopped:", err)
		}
	}()
	k8s = direct
	return m.Run()
}

func zapLevel() int8 {
	if os.Getenv("CELLSYNC_TEST_VERBOSE") != "" {
		return -4
	}
	return int8(zapcore.DPanicLevel) // terminal errors are asserted through status; their stack traces are noise
}

// seedHubNamespace creates the hub namespace with the Git credentials and signing key Secrets.
func seedHubNamespace(c client.Client) error {
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: hubNamespace}}); err != nil {
		return err
	}
	if err := c.Create(ctx, gitSecret(gitPassword)); err != nil {
		return err
	}
	var err error
	signingKey, err = openpgp.NewEntity("cellsync hub", "test", "hub@cellsync.io", nil)
	if err != nil {
		return err
	}
	var priv bytes.Buffer
	w, _ := armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	if err := signingKey.SerializePrivate(w, nil); err != nil {
		return err
	}
	_ = w.Close()
	return c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "signing-key", Namespace: hubNamespace},
		Data:       map[string][]byte{gitauth.SecretSigningKey: priv.Bytes()},
	})
}

func gitSecret(password string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git-credentials", Namespace: hubNamespace},
		Data:       map[string][]byte{gitauth.SecretUsername: []byte(gitUser), gitauth.SecretPassword: []byte(password)},
	}
}
