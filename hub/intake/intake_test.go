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

// A report that only renews a fresh heartbeat wakes the Cell, not the apps; a report that
// changes anything else, or that follows a heartbeat older than the threshold, wakes the apps
// and their Rollouts too.
func TestPollWakesAppsOnlyForNews(t *testing.T) {
	srv, err := testenv.StartGitServer("u", "p")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
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
	repo, err := source.Open(t.TempDir(), url, "unused")
	if err != nil {
		t.Fatal(err)
	}
	const staleAfter = time.Minute
	in := intake.New(store, intake.NewReports(), time.Second)
	in.StaleAfter = staleAfter
	ctx := context.Background()
	start := time.Now().Truncate(time.Second)
	report := func(heartbeat time.Time, applied string) {
		t.Helper()
		b, err := yaml.Marshal(agentv1alpha1.StatusReport{
			APIVersion: agentv1alpha1.GroupVersion.String(), Kind: agentv1alpha1.StatusReportKind, Cell: "c1",
			HeartbeatTime: metav1.NewTime(heartbeat), AppliedCommit: applied,
			Apps: []agentv1alpha1.AppReport{{App: "web", AppNamespace: "shop", Namespace: "apps", Name: "web", Kind: "Service", Ready: true}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := repo.PushReport(ctx, auth, agentv1alpha1.StatusRefPrefix+"c1", agentv1alpha1.StatusReportFile, b, heartbeat, nil); err != nil {
			t.Fatal(err)
		}
		in.Poll(ctx)
	}
	steps := []struct {
		name                  string
		heartbeat             time.Time
		read                  time.Time // the hub's clock when the intake reads the report
		applied               string
		cells, apps, rollouts int
	}{
		{"first report", start, start, "aaa", 1, 1, 1},
		{"heartbeat only, fresh", start.Add(10 * time.Second), start.Add(10 * time.Second), "aaa", 1, 0, 0},
		{"a new applied commit", start.Add(20 * time.Second), start.Add(20 * time.Second), "bbb", 1, 1, 1},
		{"heartbeat after a gap past the threshold", start.Add(20*time.Second + staleAfter), start.Add(20*time.Second + staleAfter), "bbb", 1, 1, 1},
		// The agent kept reporting every 10 s, but the hub read nothing for longer than the
		// threshold (a loaded hub): an app saw the cell stale, so this report must wake it.
		{"heartbeat only, read late", start.Add(30*time.Second + staleAfter), start.Add(30*time.Second + 2*staleAfter), "bbb", 1, 1, 1},
		{"heartbeat only, fresh again", start.Add(40*time.Second + staleAfter), start.Add(40*time.Second + staleAfter), "bbb", 1, 0, 0},
	}
	for _, s := range steps {
		in.Now = func() time.Time { return s.read }
		report(s.heartbeat, s.applied)
		if got := [3]int{drain(in.Cells), drain(in.Apps), drain(in.Rollouts)}; got != [3]int{s.cells, s.apps, s.rollouts} {
			t.Errorf("%s: cell, app, rollout events = %v, want %v", s.name, got, [3]int{s.cells, s.apps, s.rollouts})
		}
	}
}
