package intake_test

import (
	"context"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/yaml"

	"github.com/cellsync/cellsync/agent/source"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/intake"
	"github.com/cellsync/cellsync/test/testenv"
)

// drain counts the events waiting on a channel.
func drain(ch chan event.GenericEvent) int {
	n := 0
	for {
		select {
		case <-ch:
			n++
		default:
			return n
		}
	}
}

// A report that only renews the heartbeat wakes the Cell, not the apps; a report that changes
// anything else wakes the apps and their Rollouts too. Staleness is judged at each poll on the
// hub's clock, from when the hub saw the last new heartbeat: the agent's clock (here an hour
// behind the hub's) is never compared with it, a late poll makes no cell stale, and a cell whose
// staleness flips at a poll wakes its Cell, apps and Rollouts once.
// hubAndAgent is a Git server with the repository, the hub's store on it, and an agent's mirror
// that pushes reports with the agent's own code.
type hubAndAgent struct {
	srv   *testenv.GitServer
	store *gitstore.Store
	url   string
	auth  *githttp.BasicAuth
}

func newHubAndAgent(t *testing.T) hubAndAgent {
	t.Helper()
	srv, err := testenv.StartGitServer("u", "p")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	url, err := srv.CreateRepo("gitops")
	if err != nil {
		t.Fatal(err)
	}
	auth := &githttp.BasicAuth{Username: "u", Password: "p"}
	store, err := gitstore.New(gitstore.Options{URL: url, Credentials: func(context.Context) (transport.AuthMethod, *openpgp.Entity, error) {
		return auth, nil, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	return hubAndAgent{srv: srv, store: store, url: url, auth: auth}
}

func TestPollWakesAppsOnlyForNews(t *testing.T) {
	env := newHubAndAgent(t)
	store, url, auth := env.store, env.url, env.auth
	const staleAfter = time.Minute
	reports := intake.NewReports()
	in := intake.New(store, reports, time.Second)
	in.StaleAfter = staleAfter
	ctx := context.Background()
	start := time.Now().Truncate(time.Second)
	const skew = -time.Hour // the agent's clock
	push := func(at time.Duration, applied string) {
		t.Helper()
		heartbeat := start.Add(at + skew)
		b, err := yaml.Marshal(agentv1alpha1.StatusReport{
			APIVersion: agentv1alpha1.GroupVersion.String(), Kind: agentv1alpha1.StatusReportKind, Cell: "c1",
			HeartbeatTime: metav1.NewTime(heartbeat), AppliedCommit: applied,
			Apps: []agentv1alpha1.AppReport{{App: "web", AppNamespace: "shop", Namespace: "apps", Name: "web", Kind: "Service", Ready: true}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := source.PushReport(ctx, url, auth, agentv1alpha1.StatusRefPrefix+"c1", agentv1alpha1.StatusReportFile, b, heartbeat, nil); err != nil {
			t.Fatal(err)
		}
	}
	const none = ""
	steps := []struct {
		name                  string
		written               time.Duration // when the agent writes a report (none: no report)
		applied               string
		read                  time.Duration // the hub's clock when the intake polls
		cells, apps, rollouts int
		stale                 bool
	}{
		{"first report", 0, "aaa", 0, 1, 1, 1, false},
		{"heartbeat only", 10 * time.Second, "aaa", 10 * time.Second, 1, 0, 0, false},
		{"a new applied commit", 20 * time.Second, "bbb", 20 * time.Second, 1, 1, 1, false},
		{"a poll with nothing new, within the threshold", -1, none, 20*time.Second + staleAfter - time.Second, 0, 0, 0, false},
		{"the poll that passes the threshold", -1, none, 20*time.Second + staleAfter, 1, 1, 1, true},
		{"still stale", -1, none, 30*time.Second + staleAfter, 0, 0, 0, true},
		{"a new heartbeat: fresh again", 40*time.Second + staleAfter, "bbb", 40*time.Second + staleAfter, 1, 1, 1, false},
		// The agent kept reporting every 10 s, but the hub read nothing for longer than the
		// threshold (a loaded hub): no poll judged the cell stale, so it never was.
		{"heartbeat only, read late", 50*time.Second + staleAfter, "bbb", 50*time.Second + 3*staleAfter, 1, 0, 0, false},
		{"heartbeat only, fresh", 60*time.Second + 3*staleAfter, "bbb", 60*time.Second + 3*staleAfter, 1, 0, 0, false},
	}
	for _, s := range steps {
		if s.written >= 0 {
			push(s.written, s.applied)
		}
		in.Now = func() time.Time { return start.Add(s.read) }
		in.Poll(ctx)
		if got := [3]int{drain(in.Cells), drain(in.Apps), drain(in.Rollouts)}; got != [3]int{s.cells, s.apps, s.rollouts} {
			t.Errorf("%s: cell, app, rollout events = %v, want %v", s.name, got, [3]int{s.cells, s.apps, s.rollouts})
		}
		e, ok := reports.Get("c1")
		if v := intake.View(e, ok, reports.PolledAt(), staleAfter); v.Stale != s.stale {
			t.Errorf("%s: stale = %v, want %v (%s)", s.name, v.Stale, s.stale, v.Message)
		}
	}
}
