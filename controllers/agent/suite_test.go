package agent_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/cellsync/cellsync/agent/manager"
	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/test/testenv"
)

const (
	agentNamespace = "agent-system"
	gitUser        = "agent"
	gitPassword    = "pull-only-please"
	repoName       = "gitops"
)

var (
	member    *testenv.Cluster
	k8s       client.Client
	gitServer *testenv.GitServer
	repoURL   string
	// seeded are the agent namespaces made so far; cell namespaces grant their applier.
	seeded []string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	level := zapcore.DPanicLevel
	if os.Getenv("CELLSYNC_TEST_VERBOSE") != "" {
		level = zapcore.Level(-4)
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(level)))
	var err error
	member, err = testenv.StartCluster(testenv.ClusterOptions{AgentCRDs: true, KwokStages: []string{testenv.KnativeStages()}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = member.Stop() }()
	gitServer, err = testenv.StartGitServer(gitUser, gitPassword)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer gitServer.Close()
	if repoURL, err = gitServer.CreateRepo(repoName); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	k8s, err = client.New(member.Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := seed(agentNamespace); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	stop, err := startAgent(agentNamespace, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()
	return m.Run()
}

// seed makes a namespace for CellSyncs with the Git credentials Secret in it.
func seed(ns string) error {
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	seeded = append(seeded, ns)
	if err := testenv.GrantApplier(ctx, member.Config, ns); err != nil {
		return err
	}
	return k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: ns},
		Data:       map[string][]byte{gitauth.SecretUsername: []byte(gitUser), gitauth.SecretPassword: []byte(gitPassword)},
	})
}

// startAgent runs an agent for the CellSyncs of ns on the member cluster.
func startAgent(ns, dataDir string) (func(), error) {
	return testenv.StartAgent(member.Config, ns, dataDir)
}
