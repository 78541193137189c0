package argocd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/intake"
	"github.com/cellsync/cellsync/hub/placement"
	"github.com/cellsync/cellsync/hub/render"
	"github.com/cellsync/cellsync/hub/rollout"
	"github.com/cellsync/cellsync/hub/status"
	"github.com/cellsync/cellsync/test/testenv"
)

// Every hub kind's status function, over observed facts at a fake time: each state gets the
// conditions a user expects, the shipped Argo CD health script reads them as Progressing,
// Healthy, Degraded or Suspended, and the whole status is the same whenever it is computed while
// the state does not change (no ages, no counters in messages).

const staleAfter = 30 * time.Second

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

// later are the times after t0 each status is computed at again; all inside staleAfter, so that
// no state changes between them.
var later = []time.Duration{0, 7 * time.Second, 29 * time.Second}

func script(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "argocd", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// judged is one computation of an object's status: the object with its status filled in, and
// the outcome the reconciler ends with.
type judged struct {
	obj outcome.StatusObject
	out outcome.Outcome
}

// checkStable runs compute at each of the later times and checks the health the Argo CD script
// gives, the Ready reason, kstatus' invariants, and that the status does not move.
func checkStable(t *testing.T, lua, wantHealth, wantReason string, compute func(now time.Time) judged) {
	t.Helper()
	var first map[string]any
	for _, after := range later {
		j := compute(t0.Add(after))
		outcome.SetConditions(j.obj, j.out)
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(j.obj)
		if err != nil {
			t.Fatal(err)
		}
		u = jsonRoundTrip(t, u)
		u["kind"] = reflect.TypeOf(j.obj).Elem().Name()
		setObserved(u)
		got, msg := health(t, lua, u)
		if got != wantHealth {
			t.Errorf("at +%s: Argo CD health %s (%q), want %s", after, got, msg, wantHealth)
		}
		ready := findCondition(j.obj.GetConditions(), meta.ReadyCondition)
		if ready == nil || ready.Reason != wantReason {
			t.Errorf("at +%s: Ready %+v, want reason %s", after, ready, wantReason)
		}
		reconciling := findCondition(j.obj.GetConditions(), meta.ReconcilingCondition)
		stalled := findCondition(j.obj.GetConditions(), meta.StalledCondition)
		if reconciling != nil && stalled != nil {
			t.Errorf("at +%s: Reconciling and Stalled at once", after)
		}
		if ready != nil && ready.Status == metav1.ConditionTrue && (reconciling != nil || stalled != nil) {
			t.Errorf("at +%s: Ready=True with Reconciling or Stalled", after)
		}
		st := stripConditionTimes(u["status"])
		if first == nil {
			first = st
		} else if !reflect.DeepEqual(first, st) {
			t.Errorf("at +%s the status changed while the state did not:\n%v\n%v", after, first, st)
		}
	}
}

func setObserved(u map[string]any) {
	md, _ := u["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		u["metadata"] = md
	}
	md["generation"] = float64(1)
	if st, ok := u["status"].(map[string]any); ok {
		st["observedGeneration"] = float64(1)
	}
}

func stripConditionTimes(st any) map[string]any {
	m, _ := st.(map[string]any)
	if conds, ok := m["conditions"].([]any); ok {
		for _, c := range conds {
			delete(c.(map[string]any), "lastTransitionTime")
		}
	}
	return m
}

func cond(typ string, s metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg}
}

var (
	agentReady       = []metav1.Condition{cond(meta.ReadyCondition, metav1.ConditionTrue, meta.ReconciliationSucceededReason, "Applied c2")}
	agentConverging  = []metav1.Condition{cond(meta.ReadyCondition, metav1.ConditionFalse, meta.ProgressingReason, "Applying c2"), cond(meta.ReconcilingCondition, metav1.ConditionTrue, meta.ProgressingReason, "Applying c2")}
	agentBranchFirst = []metav1.Condition{cond(meta.ReadyCondition, metav1.ConditionFalse, "BranchNotFound", "Branch cells/cell-1 does not exist yet"), cond(meta.ReconcilingCondition, metav1.ConditionTrue, meta.ProgressingReason, "Branch cells/cell-1 does not exist yet")}
	agentFailed      = []metav1.Condition{cond(meta.ReadyCondition, metav1.ConditionFalse, "HealthCheckFailed", "web: RevisionFailed")}
)

// report is a cell's report as the intake holds it, first seen at seen.
func report(cell, applied string, seen time.Time, conds []metav1.Condition, apps ...agentv1alpha1.AppReport) intake.Entry {
	return intake.Entry{Commit: "s-" + cell, Seen: seen, Report: agentv1alpha1.StatusReport{Cell: cell, AppliedCommit: applied, HeartbeatTime: metav1.NewTime(seen.Add(-30 * time.Second)), Conditions: conds, Apps: apps}}
}

func webReport(ready, failed bool, rev string) agentv1alpha1.AppReport {
	a := agentv1alpha1.AppReport{App: "web", AppNamespace: "team-a", Namespace: "team-a", Name: "web", Kind: "Service", Ready: ready, Failed: failed, LatestReadyRevision: rev}
	if !ready {
		a.Message = "RevisionMissing: waiting for web-00002"
		if failed {
			a.Message = "RevisionFailed: container exited"
		}
	}
	return a
}

// reports holds the given entries; the intake polled at now.
func reports(now time.Time, entries ...intake.Entry) *intake.Reports {
	r := intake.NewReports()
	for _, e := range entries {
		r.Put(e.Report.Cell, e)
	}
	r.Polled(now)
	return r
}

func cells(names ...string) *placement.Result {
	res := &placement.Result{}
	for _, n := range names {
		res.Cells = append(res.Cells, &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	return res
}

func TestCellStatusFunction(t *testing.T) {
	lua := script(t)
	tests := []struct {
		name, health, reason string
		entry                *intake.Entry
		seen                 time.Duration // when the intake first saw the heartbeat, relative to t0
	}{
		{"no report yet", "Progressing", hubv1alpha1.ReasonNoReport, nil, 0},
		{"first branch pending", "Progressing", hubv1alpha1.ReasonAgentProgressing, &intake.Entry{}, 0},
		{"converging", "Progressing", hubv1alpha1.ReasonAgentProgressing, &intake.Entry{}, 0},
		{"ready", "Healthy", hubv1alpha1.ReasonAgentReady, &intake.Entry{}, 0},
		{"failed", "Degraded", hubv1alpha1.ReasonAgentNotReady, &intake.Entry{}, 0},
		{"stale", "Degraded", hubv1alpha1.ReasonStale, &intake.Entry{}, -staleAfter},
	}
	conds := map[string][]metav1.Condition{"first branch pending": agentBranchFirst, "converging": agentConverging, "ready": agentReady, "failed": agentFailed, "stale": agentReady}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkStable(t, lua, tt.health, tt.reason, func(now time.Time) judged {
				cell := &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: "cell-1"}}
				var e intake.Entry
				if tt.entry != nil {
					e = report("cell-1", "c2", t0.Add(tt.seen), conds[tt.name])
				}
				return judged{cell, status.Cell(cell, intake.View(e, tt.entry != nil, now, staleAfter))}
			})
		})
	}
}

func TestServerlessAppStatusFunction(t *testing.T) {
	lua := script(t)
	fresh := func(cell string, apps ...agentv1alpha1.AppReport) intake.Entry {
		return report(cell, "c2", t0, agentReady, apps...)
	}
	tests := []struct {
		name, health, reason string
		entries              []intake.Entry
		suspend, canary      bool
		message              string
	}{
		{"no report", "Progressing", hubv1alpha1.ReasonWaitingForCells, nil, false, false, "ready in 0"},
		{"first branch pending", "Progressing", hubv1alpha1.ReasonWaitingForCells, []intake.Entry{report("cell-1", "", t0, agentBranchFirst), report("cell-2", "", t0, agentBranchFirst)}, false, false, "ready in 0"},
		{"converging", "Progressing", hubv1alpha1.ReasonWaitingForCells, []intake.Entry{fresh("cell-1", webReport(true, false, "web-00002")), fresh("cell-2", webReport(false, false, ""))}, false, false, "ready in 1"},
		{"ready", "Healthy", hubv1alpha1.ReasonRendered, []intake.Entry{fresh("cell-1", webReport(true, false, "web-00002")), fresh("cell-2", webReport(true, false, "web-00002"))}, false, false, "ready in 2"},
		{"canary ready", "Healthy", hubv1alpha1.ReasonRendered, []intake.Entry{fresh("cell-1", webReport(true, false, "web-00002")), fresh("cell-2", webReport(true, false, "web-00002"))}, false, true, "the canary Rollout web writes it"},
		{"failed in one cell", "Degraded", hubv1alpha1.ReasonAppFailed, []intake.Entry{fresh("cell-1", webReport(true, false, "web-00002")), fresh("cell-2", webReport(false, true, ""))}, false, false, "failed in cell-2"},
		{"stale cell", "Degraded", hubv1alpha1.ReasonStale, []intake.Entry{fresh("cell-1", webReport(true, false, "web-00002")), report("cell-2", "c2", t0.Add(-staleAfter), agentReady, webReport(true, false, "web-00002"))}, false, false, "no fresh heartbeat from cell-2"},
		{"suspended", "Suspended", hubv1alpha1.ReasonSuspended, nil, true, false, "suspended"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkStable(t, lua, tt.health, tt.reason, func(now time.Time) judged {
				app := &hubv1alpha1.ServerlessApp{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"}}
				app.Spec.Suspend = tt.suspend
				if tt.canary {
					app.Spec.Strategy = &hubv1alpha1.Strategy{Type: hubv1alpha1.StrategyCanary, Canary: &hubv1alpha1.CanaryStrategy{}}
				}
				if tt.suspend {
					return judged{app, status.Suspended("Rendering is suspended; cell branches keep what they have")}
				}
				app.Status.Revision = "web-00002"
				res := cells("cell-1", "cell-2")
				out := status.App(app, res, intake.AppCells(app, res.Names(), reports(now, tt.entries...), now, staleAfter))
				if !strings.Contains(out.Message, tt.message) {
					t.Errorf("message %q does not say %q", out.Message, tt.message)
				}
				return judged{app, out}
			})
		})
	}
}

func TestAllAtOnceRolloutStatusFunction(t *testing.T) {
	lua := script(t)
	tests := []struct {
		name, health, reason string
		ready                bool
	}{
		{"rolling out", "Progressing", hubv1alpha1.ReasonProgressing, false},
		{"rolled out", "Healthy", hubv1alpha1.ReasonRolledOut, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prev := hubv1alpha1.RolloutStatus{StableRevision: "web-00001"}
			checkStable(t, lua, tt.health, tt.reason, func(now time.Time) judged {
				app := &hubv1alpha1.ServerlessApp{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"},
					Spec: hubv1alpha1.ServerlessAppSpec{Template: hubv1alpha1.RevisionTemplate{Image: "ghcr.io/acme/web:v2"}}}
				rev := render.AppRevision(app)
				app.Status.Revision, app.Status.CellCount = rev, 1
				app.Status.CellStatuses = []hubv1alpha1.CellAppStatus{{Cell: "cell-1", DesiredRevision: rev, Revision: rev, Ready: tt.ready}}
				app.Status.UpdatedCells = 1
				if tt.ready {
					app.Status.RolledOutCells = 1
				}
				ro := &hubv1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"}}
				// The engine starts the revision and judges it at t0 (one reconcile, two decisions),
				// then judges it again at now, as a controller does.
				in := rollout.Input{App: app, Placed: []*hubv1alpha1.Cell{{ObjectMeta: metav1.ObjectMeta{Name: "cell-1"}}},
					Reports: reports(t0), StaleAfter: staleAfter, Now: t0, Poll: 5 * time.Second}
				started := rollout.Decide(prev, in)
				judged0 := rollout.Decide(started.Status, in)
				in.Now = now
				p := rollout.Decide(judged0.Status, in)
				ro.Status = p.Status
				return judged{ro, p.Outcome}
			})
		})
	}
}

func TestCanaryRolloutStatusFunction(t *testing.T) {
	lua := script(t)
	bake := &hubv1alpha1.StepPause{Duration: &metav1.Duration{Duration: 5 * time.Minute}}
	approval := &hubv1alpha1.StepPause{UntilApproved: true}
	passed := t0.Add(-time.Minute)
	long := t0.Add(-time.Hour)
	type tc struct {
		name, health, reason string
		entries              []intake.Entry
		policy               rollout.StaleCellPolicy
		step                 int32
		paused               bool
		pause                *hubv1alpha1.StepPause
		passedAt             *time.Time
		action               rollout.Action
		message              string
		// pushedAt is when the step's commit was pushed (for the failure threshold); a minute
		// before t0 unless set.
		pushedAt time.Time
	}
	healthy := report("cell-1", "c2", t0, agentReady, webReport(true, false, "web-00002"))
	tests := []tc{
		{name: "first branch pending", health: "Progressing", reason: hubv1alpha1.ReasonProgressing, entries: []intake.Entry{report("cell-1", "", t0, agentBranchFirst)}, step: 1,
			message: "Step 1/3: Waiting for cell-1: nothing applied yet, waiting for c2"},
		{name: "converging", health: "Progressing", reason: hubv1alpha1.ReasonProgressing, entries: []intake.Entry{report("cell-1", "c2", t0, agentConverging, webReport(false, false, ""))}, step: 1,
			message: "Step 1/3: Waiting for cell-1: RevisionMissing"},
		{name: "stale under Wait", health: "Progressing", reason: hubv1alpha1.ReasonProgressing, entries: []intake.Entry{report("cell-1", "c2", t0.Add(-staleAfter), agentReady, webReport(true, false, "web-00002"))}, step: 1,
			message: "No heartbeat since 2026-12-02T11:59:30Z"},
		{name: "stale under Fail", health: "Degraded", reason: hubv1alpha1.ReasonAborted, entries: []intake.Entry{report("cell-1", "c2", t0.Add(-staleAfter), agentReady)}, policy: rollout.StaleFail, step: 1,
			action: rollout.ActAbort, message: "Canary failed: cell-1: No heartbeat"},
		{name: "advancing", health: "Progressing", reason: hubv1alpha1.ReasonProgressing, entries: []intake.Entry{healthy}, step: 1, passedAt: &passed,
			action: rollout.ActRequestNext, message: "Step 1/3 is healthy; advancing to step 2"},
		{name: "baking", health: "Progressing", reason: hubv1alpha1.ReasonProgressing, entries: []intake.Entry{healthy}, step: 1, pause: bake, passedAt: &passed,
			message: "baking until 2026-12-02T12:04:00Z"},
		{name: "baked", health: "Progressing", reason: hubv1alpha1.ReasonProgressing, entries: []intake.Entry{healthy}, step: 1, pause: bake, passedAt: &long,
			action: rollout.ActRequestNext, message: "advancing to step 2"},
		{name: "awaiting approval", health: "Suspended", reason: hubv1alpha1.ReasonAwaitingApproval, entries: []intake.Entry{healthy}, step: 2, pause: approval, passedAt: &passed,
			message: "waiting for approval: kubectl cells promote web -n team-a"},
		{name: "paused while converging", health: "Suspended", reason: hubv1alpha1.ReasonPaused, entries: []intake.Entry{report("cell-1", "c1", t0, agentConverging)}, step: 1, paused: true,
			message: "Paused by a RolloutStep; Step 1/3: Waiting for cell-1: applied c1, waiting for c2"},
		{name: "paused while healthy", health: "Suspended", reason: hubv1alpha1.ReasonPaused, entries: []intake.Entry{healthy}, step: 1, paused: true, passedAt: &passed,
			message: "paused by a RolloutStep: resume or promote"},
		{name: "last step passes", health: "Healthy", reason: hubv1alpha1.ReasonRolledOut, entries: []intake.Entry{healthy}, step: 3, passedAt: &passed,
			action: rollout.ActComplete, message: "Revision web-00002 runs in every placed cell"},
		{name: "failed past the threshold", health: "Degraded", reason: hubv1alpha1.ReasonAborted, entries: []intake.Entry{report("cell-1", "c2", t0, agentReady, webReport(false, true, ""))}, step: 1,
			action: rollout.ActAbort, message: "Canary failed: cell-1: RevisionFailed", pushedAt: long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkStable(t, lua, tt.health, tt.reason, func(now time.Time) judged {
				pushed := tt.pushedAt
				if pushed.IsZero() {
					pushed = passed
				}
				exp := []rollout.Expectation{{Cell: "cell-1", Commit: "c2", Since: pushed}}
				gate := rollout.Judge("web", "team-a", exp, reports(now, tt.entries...), now,
					rollout.Options{StaleAfter: staleAfter, Policy: tt.policy, FailureThreshold: 10 * time.Minute})
				d := rollout.Next(rollout.StepFacts{App: "web", Namespace: "team-a", Revision: "web-00002", Step: tt.step, Steps: 3,
					Gate: gate, Paused: tt.paused, Pause: tt.pause, PassedAt: tt.passedAt}, now, 5*time.Second)
				if d.Action != tt.action {
					t.Errorf("action %d, want %d", d.Action, tt.action)
				}
				if !strings.Contains(d.Message, tt.message) {
					t.Errorf("message %q does not say %q", d.Message, tt.message)
				}
				if d.FirstPass != (gate.Complete && tt.passedAt == nil) {
					t.Errorf("first pass %v with gate %+v", d.FirstPass, gate)
				}
				ro := &hubv1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"}}
				ro.Status.Phase, ro.Status.Message, ro.Status.Step, ro.Status.Steps = d.Phase, d.Message, tt.step, 3
				return judged{ro, d.Outcome}
			})
		})
	}

	// A bake ends at a time: judged again after it, the step advances without an event.
	d := rollout.Next(rollout.StepFacts{Step: 1, Steps: 3, Gate: rollout.Gate{Complete: true}, Pause: bake, PassedAt: &passed}, t0, 5*time.Second)
	if d.Action != rollout.ActWait || d.RecheckAfter != 4*time.Minute {
		t.Errorf("baking: action %d, recheck after %s; want to wait 4m", d.Action, d.RecheckAfter)
	}

	t.Run("at rest", func(t *testing.T) {
		for _, tt := range []struct {
			name, health, reason, held string
			phase                      hubv1alpha1.RolloutPhase
		}{
			{"completed", "Healthy", hubv1alpha1.ReasonRolledOut, "", hubv1alpha1.PhaseCompleted},
			{"aborted", "Degraded", hubv1alpha1.ReasonAborted, "", hubv1alpha1.PhaseAborted},
			{"held after a rebuild", "Suspended", hubv1alpha1.ReasonStateLost, "This hub has no state for the rollout of web-00002", hubv1alpha1.PhasePaused},
		} {
			t.Run(tt.name, func(t *testing.T) {
				checkStable(t, lua, tt.health, tt.reason, func(time.Time) judged {
					ro := &hubv1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"}}
					ro.Status.Phase, ro.Status.Message = tt.phase, "what happened"
					return judged{ro, rollout.AtRest(ro.Status, tt.held)}
				})
			})
		}
	})
}

func TestRolloutStepStatusFunction(t *testing.T) {
	lua := script(t)
	for _, tt := range []struct {
		phase          hubv1alpha1.RolloutStepPhase
		reason, health string
	}{
		{hubv1alpha1.StepPending, hubv1alpha1.ReasonProgressing, "Progressing"},
		{hubv1alpha1.StepApplied, hubv1alpha1.ReasonStepApplied, "Progressing"},
		{hubv1alpha1.StepSucceeded, hubv1alpha1.ReasonStepComplete, "Healthy"},
		{hubv1alpha1.StepRefused, hubv1alpha1.ReasonInvalidStep, "Degraded"},
		{hubv1alpha1.StepSuperseded, hubv1alpha1.ReasonSuperseded, "Degraded"},
	} {
		t.Run(string(tt.phase), func(t *testing.T) {
			checkStable(t, lua, tt.health, tt.reason, func(time.Time) judged {
				s := &hubv1alpha1.RolloutStep{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "team-a"}}
				s.Status.Phase = tt.phase
				return judged{s, status.Step(tt.phase, tt.reason, "what came of it")}
			})
		})
	}
}

// refused is an AppSource commit the hub will not apply.
type refused struct{}

func (refused) Error() string {
	return "commit abc refused, nothing applied: kind Secret is not allowed"
}
func (refused) RefusalReason() string { return hubv1alpha1.ReasonSourceForbidden }

func TestAppSourceStatusFunction(t *testing.T) {
	lua := script(t)
	for _, tt := range []struct {
		name, health, reason string
		err                  error
		suspend              bool
		fix                  status.Fix
	}{
		{"synced", "Healthy", hubv1alpha1.ReasonSynced, nil, false, status.FixRetry},
		{"branch missing", "Progressing", hubv1alpha1.ReasonBranchNotFound, &gitstore.BranchNotFoundError{Branch: "main"}, false, status.FixElsewhere},
		{"forbidden content", "Degraded", hubv1alpha1.ReasonSourceForbidden, refused{}, false, status.FixElsewhere},
		{"invalid content", "Degraded", hubv1alpha1.ReasonInvalidSpec, &render.InvalidError{Reason: hubv1alpha1.ReasonInvalidSpec, Message: "spec.template.image is empty"}, false, status.FixSpec},
		{"Git down", "Progressing", hubv1alpha1.ReasonGitUnavailable, &gitstore.UnavailableError{Err: errors.New("connection refused")}, false, status.FixRetry},
		{"credentials refused", "Degraded", hubv1alpha1.ReasonGitAuthFailed, &gitstore.AuthError{Err: errors.New("401")}, false, status.FixElsewhere},
		{"apply failed", "Progressing", hubv1alpha1.ReasonProgressing, fmt.Errorf("failed to apply: %w", errors.New("etcdserver: request timed out")), false, status.FixRetry},
		{"suspended", "Suspended", hubv1alpha1.ReasonSuspended, nil, true, status.FixRetry},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkStable(t, lua, tt.health, tt.reason, func(time.Time) judged {
				src := &hubv1alpha1.AppSource{ObjectMeta: metav1.ObjectMeta{Name: "apps", Namespace: "team-a"}}
				src.Spec.Suspend = tt.suspend
				switch {
				case tt.suspend:
					return judged{src, status.Suspended("Syncing is suspended; applied objects stay")}
				case tt.err == nil:
					return judged{src, status.Synced("0123456789abcdef", 4)}
				}
				v := status.Classify(tt.err)
				if v.Fix != tt.fix {
					t.Errorf("fix %d, want %d", v.Fix, tt.fix)
				}
				return judged{src, v.Outcome}
			})
		})
	}
}

func TestCellPlacementStatusFunction(t *testing.T) {
	lua := script(t)
	for _, tt := range []struct {
		name, health, reason string
		missing              []string
	}{
		{"resolved", "Healthy", hubv1alpha1.ReasonResolved, nil},
		{"named cell missing", "Progressing", hubv1alpha1.ReasonNoCells, []string{"cell-9"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkStable(t, lua, tt.health, tt.reason, func(time.Time) judged {
				pl := &hubv1alpha1.CellPlacement{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: "team-a"}}
				res := cells("cell-1", "cell-2")
				res.Missing = tt.missing
				return judged{pl, status.Placement(pl, res)}
			})
		})
	}
}

// jsonRoundTrip is the object as Argo CD reads it: JSON decoded into plain maps.
func jsonRoundTrip(t *testing.T, u map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}
