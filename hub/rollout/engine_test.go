package rollout

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/intake"
	"github.com/cellsync/cellsync/hub/render"
)

// world carries plans out the way the controller does, against branches held in memory, with a
// fake clock: the engine is exercised with no apiserver and no Git.
type world struct {
	t       *testing.T
	app     *hubv1alpha1.ServerlessApp
	placed  []*hubv1alpha1.Cell
	st      hubv1alpha1.RolloutStatus
	now     time.Time
	reports *intake.Reports
	// heads is each cell's branch head; trees what each commit holds ("rev@weight" or "").
	heads map[string]string
	trees map[string]string
	seq   int
	// analysed, when set, renders an analysis for canary cells of a step that has a stable revision.
	analysed bool
	// steps are the RolloutSteps' phases; pending those not acted on yet.
	steps    map[string]hubv1alpha1.RolloutStepPhase
	messages map[string]string
	pending  []Request
	events   []Event
	// written lists, per decision, the cells each write touched.
	written  [][]string
	holdings map[string]Holding
	last     Plan
	// tables counts the decisions whose cell table went through Git (more cells than the
	// status lists).
	tables int
}

// persist keeps the status the way the controller does between reconciles: above StatusCells
// cells, the status lists the first ones and the cell table is read back from its files.
func (w *world) persist() {
	w.t.Helper()
	if len(w.st.Cells) <= StatusCells {
		return
	}
	files, _ := Table(w.st.Cells)
	w.st.Cells = w.st.Cells[:StatusCells]
	if err := Remember(&w.st, files); err != nil {
		w.t.Fatalf("the cell table does not read back: %v", err)
	}
	w.tables++
}

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func newWorld(t *testing.T, app *hubv1alpha1.ServerlessApp, names ...string) *world {
	w := &world{t: t, app: app, now: t0, reports: intake.NewReports(), heads: map[string]string{}, trees: map[string]string{},
		steps: map[string]hubv1alpha1.RolloutStepPhase{}, messages: map[string]string{}}
	for _, n := range names {
		w.placed = append(w.placed, &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	return w
}

func canary(image string, policy StaleCellPolicy, steps ...hubv1alpha1.CanaryStep) *hubv1alpha1.ServerlessApp {
	return &hubv1alpha1.ServerlessApp{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web", Generation: 1},
		Spec: hubv1alpha1.ServerlessAppSpec{
			PlacementRef: corev1.LocalObjectReference{Name: "p"},
			Template:     hubv1alpha1.RevisionTemplate{Image: image},
			Strategy: &hubv1alpha1.Strategy{Type: hubv1alpha1.StrategyCanary, Canary: &hubv1alpha1.CanaryStrategy{
				Steps: steps, StaleCellPolicy: string(policy), FailureThreshold: &metav1.Duration{Duration: 5 * time.Minute}}},
		},
	}
}

// allAtOnce is the app with the default strategy.
func allAtOnce(image string) *hubv1alpha1.ServerlessApp {
	app := canary(image, StaleWait)
	app.Spec.Strategy = nil
	return app
}

func at(weight int32, names ...string) hubv1alpha1.CanaryStep {
	if len(names) == 0 {
		return hubv1alpha1.CanaryStep{Cells: hubv1alpha1.StepCells{Percent: ptr.To[int32](100)}, Weight: weight}
	}
	return hubv1alpha1.CanaryStep{Cells: hubv1alpha1.StepCells{Names: names}, Weight: weight}
}

func (w *world) rev() string { return render.AppRevision(w.app) }

// setImage changes the app's template, as a person would, and returns the new revision.
func (w *world) setImage(image string) string {
	w.app = w.app.DeepCopy()
	w.app.Spec.Template.Image = image
	w.app.Generation++
	return w.rev()
}

// decide is one reconcile: decide, carry out, and decide again after a move.
func (w *world) decide() Plan {
	w.t.Helper()
	in := Input{App: w.app, Placed: w.placed, Pending: w.pending, Reports: w.reports, StaleAfter: 2 * time.Minute, Now: w.now, Poll: 5 * time.Second}
	if NeedsHoldings(w.st, w.app) {
		in.Holdings = w.holdings
	}
	w.pending = nil
	for round := 1; ; round++ {
		p := Decide(w.st, in)
		w.last = p
		if p.Err != nil {
			return p
		}
		w.carry(&p)
		if !p.Again || round == 3 {
			w.persist()
			return p
		}
		in.Pending, in.Holdings, in.App = nil, nil, w.app
	}
}

func (w *world) commit(tree string) string {
	w.seq++
	c := fmt.Sprintf("%040x", w.seq)
	w.trees[c] = tree
	return c
}

func (w *world) carry(p *Plan) {
	if p.SetTemplate != nil {
		w.app = p.App
		w.step(*p.Undone)
	}
	var touched []string
	switch p.Write {
	case WriteCells:
		res := Written{Before: map[string]string{}, Heads: map[string]string{}, Stable: map[string]string{}, Analyses: map[string]string{}}
		for _, e := range p.Status.Cells {
			if !e.Canary && e.LastKnownGood == "" {
				continue
			}
			before := w.heads[e.Cell]
			res.Before[e.Cell] = before
			touched = append(touched, e.Cell)
			switch {
			case e.Canary:
				weight := e.Weight
				if p.Status.Step == p.Status.Steps {
					weight = 100
				}
				stable := e.StableRevision
				if e.LastKnownGood == "" {
					stable = strings.Split(w.trees[before], "@")[0]
					res.Stable[e.Cell] = stable
				}
				if tree := fmt.Sprintf("%s@%d", p.Status.CanaryRevision, weight); w.trees[before] != tree {
					w.heads[e.Cell] = w.commit(tree)
				}
				if w.analysed && stable != "" {
					res.Analyses[e.Cell] = fmt.Sprintf("an-%d-%d", p.Status.Step, p.Status.AnalysisAttempt)
				}
			case e.LastKnownGood == LastKnownGoodNone:
				w.heads[e.Cell] = w.commit("")
			default:
				w.heads[e.Cell] = w.commit(w.trees[e.LastKnownGood])
			}
			res.Heads[e.Cell] = w.heads[e.Cell]
		}
		Recorded(&p.Status, res, w.now)
	case WriteAll:
		for _, c := range w.placed {
			if tree := w.rev() + "@100"; w.trees[w.heads[c.Name]] != tree {
				w.heads[c.Name] = w.commit(tree)
				touched = append(touched, c.Name)
			}
		}
	}
	w.written = append(w.written, touched)
	w.st = p.Status
	for _, u := range p.Steps {
		if u.IfApplied && w.steps[u.Name] != hubv1alpha1.StepApplied {
			continue
		}
		w.step(u)
	}
	for _, n := range p.Create {
		if _, ok := w.steps[n.Name]; !ok {
			w.steps[n.Name] = hubv1alpha1.StepPending
			w.pending = append(w.pending, Request{Name: n.Name, Spec: n.Spec})
		}
	}
	w.events = append(w.events, p.Events...)
}

func (w *world) step(u StepUpdate) {
	w.steps[u.Name], w.messages[u.Name] = u.Phase, u.Message
}

// request is a RolloutStep a person creates.
func (w *world) request(name string, action hubv1alpha1.RolloutAction) {
	w.steps[name] = hubv1alpha1.StepPending
	w.pending = append(w.pending, Request{Name: name, Spec: hubv1alpha1.RolloutStepSpec{RolloutRef: corev1.LocalObjectReference{Name: "web"}, Action: action}})
}

// report has cells report their branch head, the app ready or not, with a heartbeat at now;
// analyses, when given, are the cells' verdicts on the analysis the hub rendered for them.
func (w *world) report(ready bool, phase string, names ...string) {
	for _, n := range names {
		rep := agentv1alpha1.StatusReport{HeartbeatTime: metav1.NewTime(w.now), AppliedCommit: w.heads[n],
			Conditions: []metav1.Condition{{Type: meta.ReadyCondition, Status: metav1.ConditionTrue}},
			Apps:       []agentv1alpha1.AppReport{{App: "web", AppNamespace: "team", Ready: ready, LatestReadyRevision: strings.Split(w.trees[w.heads[n]], "@")[0], Message: "RevisionFailed"}}}
		for _, e := range w.st.Cells {
			if e.Cell == n && e.Analysis != nil && phase != "" {
				v := 0.2
				rep.Analyses = []agentv1alpha1.AnalysisReport{{ID: e.Analysis.ID, Commit: w.heads[n], Phase: phase, Metrics: []agentv1alpha1.MetricReport{{
					Name: "error-rate", Phase: phase, Query: "sum(rate(errors[1m]))",
					Measurements: []agentv1alpha1.Measurement{{Phase: phase, Value: &v, Message: "0.2 is above the maximum 0.05"}}}}}}
			}
		}
		w.reports.Put(n, intake.Entry{Commit: "s-" + n, Seen: w.now, Report: rep})
	}
	w.reports.Polled(w.now)
}

func (w *world) tick(d time.Duration) {
	w.now = w.now.Add(d)
	w.reports.Polled(w.now)
}

func (w *world) expect(phase hubv1alpha1.RolloutPhase, step string, says string) {
	w.t.Helper()
	if w.st.Phase != phase || w.st.StepDisplay != step || !strings.Contains(w.st.Message, says) {
		w.t.Fatalf("rollout is %s at %s (%q); want %s at %s saying %q", w.st.Phase, w.st.StepDisplay, w.st.Message, phase, step, says)
	}
}

func (w *world) expectTrees(want map[string]string) {
	w.t.Helper()
	for cell, tree := range want {
		if got := w.trees[w.heads[cell]]; got != tree {
			w.t.Fatalf("cell %s holds %q, want %q (heads %v)", cell, got, tree, w.heads)
		}
	}
}

func (w *world) expectStep(name string, phase hubv1alpha1.RolloutStepPhase, says string) {
	w.t.Helper()
	if w.steps[name] != phase || !strings.Contains(w.messages[name], says) {
		w.t.Fatalf("RolloutStep %s is %s (%q); want %s saying %q", name, w.steps[name], w.messages[name], phase, says)
	}
}

func (w *world) expectEvent(reason, says string) {
	w.t.Helper()
	for _, e := range w.events {
		if e.Reason == reason && strings.Contains(e.Message, says) {
			return
		}
	}
	w.t.Fatalf("no %s event saying %q in %+v", reason, says, w.events)
}

// deployed walks a canary app's first revision in (straight to the last step) and returns it.
func deployed(t *testing.T, policy StaleCellPolicy, steps ...hubv1alpha1.CanaryStep) (*world, string) {
	w := newWorld(t, canary("ghcr.io/acme/web:v1", StaleWait, steps...), "a", "b", "c")
	v1 := w.rev()
	last := fmt.Sprintf("%d/%d", len(steps), len(steps))
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, last, "")
	w.report(true, "", "a", "b", "c")
	w.decide()
	w.expect(hubv1alpha1.PhaseCompleted, last, "Revision "+v1+" runs in every placed cell")
	w.expectTrees(map[string]string{"a": v1 + "@100", "b": v1 + "@100", "c": v1 + "@100"})
	// The policy under test applies from the next revision on (it is not part of the revision).
	w.app.Spec.Strategy.Canary.StaleCellPolicy = string(policy)
	return w, v1
}

var threeSteps = []hubv1alpha1.CanaryStep{at(20, "a"), at(50, "a", "b"), at(100)}

// A healthy canary walks every step, one automatic RolloutStep at a time, writing only the
// step's cells, and completes with the revision recorded for undo.
func TestPlanWalksEveryStep(t *testing.T) {
	w, v1 := deployed(t, StaleWait, threeSteps...)
	v2 := w.setImage("ghcr.io/acme/web:v2")
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/3", "a: applied")
	w.expectTrees(map[string]string{"a": v2 + "@20", "b": v1 + "@100", "c": v1 + "@100"})
	if got := w.written[len(w.written)-2]; len(got) != 1 || got[0] != "a" {
		t.Fatalf("step 1 wrote %v, want only a", got)
	}
	w.report(true, "", "a")
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/3", "advancing to step 2")
	if len(w.pending) != 1 || w.pending[0].Spec.Action != hubv1alpha1.ActionAdvance || *w.pending[0].Spec.Step != 2 {
		t.Fatalf("want one automatic RolloutStep to step 2, got %+v", w.pending)
	}
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "2/3", "")
	w.expectTrees(map[string]string{"a": v2 + "@50", "b": v2 + "@50", "c": v1 + "@100"})
	w.report(true, "", "a", "b")
	w.decide()
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "3/3", "")
	w.report(true, "", "a", "b", "c")
	w.decide()
	w.expect(hubv1alpha1.PhaseCompleted, "3/3", "Revision "+v2+" runs in every placed cell")
	w.expectTrees(map[string]string{"a": v2 + "@100", "b": v2 + "@100", "c": v2 + "@100"})
	if w.last.Write != WriteAll {
		t.Fatalf("the completing decision must render every cell plainly before saying Completed, got write %v", w.last.Write)
	}
	if w.st.StableRevision != v2 || len(w.st.History) != 2 || w.st.CanaryRevision != "" {
		t.Fatalf("completed status: %+v", w.st)
	}
	for _, e := range w.st.Cells {
		if e.Canary || e.LastKnownGood != "" {
			t.Fatalf("a completed rollout holds no cell: %+v", e)
		}
	}
	w.expectEvent(hubv1alpha1.ReasonRolledOut, v2)
	// At rest the status does not move while nothing changes.
	before := w.st.DeepCopy()
	w.tick(7 * time.Second)
	w.decide()
	w.tick(29 * time.Second)
	w.decide()
	if w.st.Phase != before.Phase || w.st.Message != before.Message || w.st.CellsDisplay != before.CellsDisplay {
		t.Fatalf("status moved at rest: %+v → %+v", before, w.st)
	}
}

// Each gate's verdict, from the cells' reports and analyses, with a fake clock.
func TestPlanGates(t *testing.T) {
	for _, tt := range []struct {
		name   string
		policy StaleCellPolicy
		// act makes the step-1 cell (a) report, ages the world, or both.
		act    func(w *world)
		phase  hubv1alpha1.RolloutPhase
		says   string
		reason string
		// back is true when every touched cell must be back at its last-known-good tree.
		back bool
	}{
		{"pass", StaleWait, func(w *world) { w.report(true, "", "a") }, hubv1alpha1.PhaseProgressing, "advancing to step 2", hubv1alpha1.ReasonProgressing, false},
		{"not ready within the failure threshold", StaleWait, func(w *world) { w.report(false, "", "a"); w.tick(time.Minute); w.report(false, "", "a") },
			hubv1alpha1.PhaseProgressing, "a: RevisionFailed", hubv1alpha1.ReasonProgressing, false},
		{"fail: not ready past the failure threshold", StaleWait, func(w *world) { w.report(false, "", "a"); w.tick(6 * time.Minute); w.report(false, "", "a") },
			hubv1alpha1.PhaseAborted, "Canary failed: a: RevisionFailed", hubv1alpha1.ReasonAborted, true},
		{"stale cell, policy Wait", StaleWait, func(w *world) { w.report(true, "", "a"); w.tick(10 * time.Minute) },
			hubv1alpha1.PhaseProgressing, "a: No heartbeat since", hubv1alpha1.ReasonProgressing, false},
		{"stale cell, policy Skip", StaleSkip, func(w *world) { w.report(true, "", "a"); w.tick(10 * time.Minute) },
			hubv1alpha1.PhaseProgressing, "advancing to step 2", hubv1alpha1.ReasonProgressing, false},
		{"stale cell, policy Fail", StaleFail, func(w *world) { w.report(true, "", "a"); w.tick(10 * time.Minute) },
			hubv1alpha1.PhaseAborted, "Canary failed: a: No heartbeat since", hubv1alpha1.ReasonAborted, true},
		{"analysis successful", StaleWait, func(w *world) { w.report(true, agentv1alpha1.AnalysisSuccessful, "a") },
			hubv1alpha1.PhaseProgressing, "advancing to step 2", hubv1alpha1.ReasonProgressing, false},
		{"analysis failed", StaleWait, func(w *world) { w.report(true, agentv1alpha1.AnalysisFailed, "a") },
			hubv1alpha1.PhaseAborted, "a: analysis failed: metric error-rate = 0.2 (0.2 is above the maximum 0.05)", hubv1alpha1.ReasonAborted, true},
		{"analysis inconclusive", StaleWait, func(w *world) { w.report(true, agentv1alpha1.AnalysisInconclusive, "a") },
			hubv1alpha1.PhasePaused, "a: analysis inconclusive: metric error-rate = 0.2 (query sum(rate(errors[1m])))", hubv1alpha1.ReasonAnalysisInconclusive, false},
		{"analysis still running", StaleWait, func(w *world) { w.report(true, agentv1alpha1.AnalysisRunning, "a") },
			hubv1alpha1.PhaseProgressing, "a: analysis running", hubv1alpha1.ReasonProgressing, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w, v1 := deployed(t, tt.policy, threeSteps...)
			w.analysed = strings.HasPrefix(tt.name, "analysis")
			w.setImage("ghcr.io/acme/web:v2")
			w.decide()
			tt.act(w)
			p := w.decide()
			w.expect(tt.phase, "1/3", tt.says)
			if p.Outcome.Reason != tt.reason {
				t.Fatalf("outcome %+v, want reason %s", p.Outcome, tt.reason)
			}
			if tt.back {
				w.expectTrees(map[string]string{"a": v1 + "@100", "b": v1 + "@100", "c": v1 + "@100"})
				w.expectEvent(hubv1alpha1.ReasonAborted, "every touched cell is back")
				if p.Outcome.Kind != outcome.Failed {
					t.Fatalf("an abort fails the rollout: %+v", p.Outcome)
				}
			}
			if tt.phase == hubv1alpha1.PhaseAborted && len(w.st.Cells) > 0 {
				for _, e := range w.st.Cells {
					if e.Canary || e.LastKnownGood != "" {
						t.Fatalf("an aborted rollout still holds %+v", e)
					}
				}
			}
		})
	}
}

// Inconclusive pauses; a resume renders the step's analysis again under a new id.
func TestPlanResumeMeasuresAgain(t *testing.T) {
	w, _ := deployed(t, StaleWait, threeSteps...)
	w.analysed = true
	w.setImage("ghcr.io/acme/web:v2")
	w.decide()
	w.report(true, agentv1alpha1.AnalysisInconclusive, "a")
	w.decide()
	first := w.st.Cells[0].Analysis.ID
	w.request("resume", hubv1alpha1.ActionResume)
	w.decide()
	w.expectStep("resume", hubv1alpha1.StepSucceeded, "measured again")
	if w.st.AnalysisAttempt != 1 || w.st.Cells[0].Analysis.ID == first {
		t.Fatalf("the analysis must be rendered again under a new id: %+v", w.st.Cells[0].Analysis)
	}
	w.expect(hubv1alpha1.PhaseProgressing, "1/3", "analysis not started yet")
}

// A new revision mid-canary supersedes it: the step that moved it is Superseded, and cells
// outside the new first step go back to their last-known-good trees.
func TestPlanSupersede(t *testing.T) {
	w, v1 := deployed(t, StaleWait, at(20, "a"), at(50, "a", "b"), at(100))
	w.setImage("ghcr.io/acme/web:v2")
	w.decide()
	w.report(true, "", "a")
	w.decide()
	w.decide() // the automatic step to 2/3: b joins
	w.expect(hubv1alpha1.PhaseProgressing, "2/3", "")
	moved := w.st.CurrentStep
	v3 := w.setImage("ghcr.io/acme/web:v3")
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/3", "")
	if w.st.CanaryRevision != v3 || w.st.SupersededRevision == "" || w.steps[moved] != hubv1alpha1.StepSuperseded {
		t.Fatalf("supersede: canary %s superseded %s, step %s is %s", w.st.CanaryRevision, w.st.SupersededRevision, moved, w.steps[moved])
	}
	w.expectTrees(map[string]string{"a": v3 + "@20", "b": v1 + "@100", "c": v1 + "@100"})
	w.expectEvent(hubv1alpha1.ReasonSuperseded, "supersedes")
	// a still holds its first last-known-good: an abort now puts v1 back.
	w.request("stop", hubv1alpha1.ActionAbort)
	w.decide()
	w.expect(hubv1alpha1.PhaseAborted, "1/3", "Aborted by RolloutStep stop")
	w.expectTrees(map[string]string{"a": v1 + "@100", "b": v1 + "@100"})
}

// A RolloutStep pauses the rollout: a healthy step holds until resumed, then advances.
func TestPlanPauseAndResume(t *testing.T) {
	w, _ := deployed(t, StaleWait, threeSteps...)
	w.setImage("ghcr.io/acme/web:v2")
	w.decide()
	w.request("hold", hubv1alpha1.ActionPause)
	w.decide()
	w.expect(hubv1alpha1.PhasePaused, "1/3", "Paused by a RolloutStep")
	w.report(true, "", "a")
	w.decide()
	w.expect(hubv1alpha1.PhasePaused, "1/3", "is healthy; paused by a RolloutStep: resume or promote")
	if len(w.pending) != 0 {
		t.Fatalf("a paused rollout asks for no step: %+v", w.pending)
	}
	w.request("go", hubv1alpha1.ActionResume)
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/3", "advancing to step 2")
	// Advancing while the step is in progress is refused, with nothing written.
	w.decide()
	w.request("too-soon", hubv1alpha1.ActionAdvance)
	writes := len(w.written)
	w.decide()
	w.expectStep("too-soon", hubv1alpha1.StepRefused, "still in progress")
	for _, touched := range w.written[writes:] {
		if len(touched) != 0 {
			t.Fatalf("a refused step wrote %v", touched)
		}
	}
}

// A bake holds a healthy step until its end, named as a time, then advances.
func TestPlanBakes(t *testing.T) {
	bake := at(20, "a")
	bake.Pause = &hubv1alpha1.StepPause{Duration: &metav1.Duration{Duration: 5 * time.Minute}}
	w, _ := deployed(t, StaleWait, bake, at(100))
	w.setImage("ghcr.io/acme/web:v2")
	w.decide()
	w.report(true, "", "a")
	p := w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/2", "baking until 2026-12-06T12:05:00Z")
	if p.RecheckAfter != 5*time.Minute {
		t.Fatalf("judge again when the bake ends, not %s", p.RecheckAfter)
	}
	w.tick(2 * time.Minute)
	w.report(true, "", "a")
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/2", "baking until 2026-12-06T12:05:00Z")
	w.tick(4 * time.Minute)
	w.report(true, "", "a")
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/2", "advancing to step 2")
}

// Undo after a completed rollout sets the app's template back to the previous revision and
// walks the strategy for it; a Git-synced app is refused.
func TestPlanUndo(t *testing.T) {
	w, v1 := deployed(t, StaleWait, threeSteps...)
	v2 := w.setImage("ghcr.io/acme/web:v2")
	w.request("promote", hubv1alpha1.ActionPromote)
	w.decide()
	w.report(true, "", "a", "b", "c")
	w.decide()
	w.expect(hubv1alpha1.PhaseCompleted, "3/3", v2)
	w.request("back", hubv1alpha1.ActionUndo)
	w.decide()
	if w.app.Spec.Template.Image != "ghcr.io/acme/web:v1" || w.rev() != v1 {
		t.Fatalf("undo must set the template back to v1: %+v", w.app.Spec.Template)
	}
	w.expectStep("back", hubv1alpha1.StepSucceeded, "Rolling forward to revision "+v1)
	w.expect(hubv1alpha1.PhaseProgressing, "1/3", "")
	w.expectTrees(map[string]string{"a": v1 + "@20", "b": v2 + "@100"})

	synced, _ := deployed(t, StaleWait, threeSteps...)
	synced.app.Annotations = map[string]string{hubv1alpha1.SourceCommitAnnotation: "0123456789abcdef"}
	synced.request("back", hubv1alpha1.ActionUndo)
	synced.decide()
	synced.expectStep("back", hubv1alpha1.StepRefused, "synced from Git (commit 0123456789ab)")
}

// All at once is the one-step strategy of the same engine: every placed cell plainly at once,
// complete when the app's summary says every cell runs it ready; RolloutSteps are refused.
func TestPlanAllAtOnce(t *testing.T) {
	w := newWorld(t, allAtOnce("ghcr.io/acme/web:v1"), "a", "b")
	v1 := w.rev()
	p := w.decide()
	if p.Write != WriteAll {
		t.Fatalf("all at once writes every placed cell, got %v", p.Write)
	}
	w.expect(hubv1alpha1.PhaseProgressing, "1/1", "Rolling out "+v1)
	w.expectTrees(map[string]string{"a": v1 + "@100", "b": v1 + "@100"})
	// The app's summary, as status.App writes it: counts over every cell, a bounded list.
	summary := func(ready ...string) {
		w.app.Status.Revision, w.app.Status.CellCount, w.app.Status.CellStatuses = w.rev(), 2, nil
		w.app.Status.UpdatedCells, w.app.Status.RolledOutCells = len(ready), len(ready)
		for _, n := range []string{"a", "b"} {
			s := hubv1alpha1.CellAppStatus{Cell: n, DesiredRevision: w.rev()}
			for _, r := range ready {
				if r == n {
					s.Revision, s.Ready = w.rev(), true
				}
			}
			w.app.Status.CellStatuses = append(w.app.Status.CellStatuses, s)
		}
	}
	summary("a")
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/1", "1 of 2 cells run it ready")
	if w.st.CellsDisplay != "1/1/2" || w.st.CanaryWeight != 100 {
		t.Fatalf("cells %s weight %d", w.st.CellsDisplay, w.st.CanaryWeight)
	}
	summary("a", "b")
	w.decide()
	w.expect(hubv1alpha1.PhaseCompleted, "1/1", "Revision "+v1+" runs in every placed cell")
	if w.st.StableRevision != v1 || len(w.st.History) != 1 {
		t.Fatalf("completed: %+v", w.st)
	}
	for _, e := range w.st.Cells {
		if e.LastKnownGood != "" || e.Canary {
			t.Fatalf("all at once keeps no last-known-good: %+v", e)
		}
	}
	// A stale app summary (of the old revision) never completes a new one.
	v2 := w.setImage("ghcr.io/acme/web:v2")
	w.app.Status.Revision = v1
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/1", "not summarized for it yet")
	w.expectTrees(map[string]string{"a": v2 + "@100", "b": v2 + "@100"})
	w.request("pause", hubv1alpha1.ActionPause)
	w.decide()
	w.expectStep("pause", hubv1alpha1.StepRefused, "rolls out all at once")
}

// All at once on more cells than the app's status lists (at most 256): the gate counts with the
// summary's counters, which cover every cell, and completes.
func TestPlanAllAtOnceBeyondTheListedCells(t *testing.T) {
	names := make([]string, 300)
	for i := range names {
		names[i] = fmt.Sprintf("cell-%03d", i)
	}
	w := newWorld(t, allAtOnce("ghcr.io/acme/web:v1"), names...)
	w.decide()
	w.app.Status.Revision, w.app.Status.CellCount = w.rev(), 300
	for _, n := range names[:hubv1alpha1.MaxStatusCells] {
		w.app.Status.CellStatuses = append(w.app.Status.CellStatuses, hubv1alpha1.CellAppStatus{Cell: n, DesiredRevision: w.rev(), Revision: w.rev(), Ready: true})
	}
	w.app.Status.UpdatedCells, w.app.Status.RolledOutCells = 300, 299
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/1", "299 of 300 cells run it ready")
	w.app.Status.RolledOutCells = 300
	w.decide()
	w.expect(hubv1alpha1.PhaseCompleted, "1/1", "runs in every placed cell")
	if w.st.CellsDisplay != "300/300/300" || len(w.st.Cells) != hubv1alpha1.MaxStatusCells {
		t.Fatalf("cells %s, %d listed", w.st.CellsDisplay, len(w.st.Cells))
	}
}

// Bad input and lost state: a strategy the placement cannot hold fails with nothing planned;
// a canary in flight in the branches that this hub has no state for holds, writing nothing.
func TestPlanBadInputAndLostState(t *testing.T) {
	w := newWorld(t, canary("ghcr.io/acme/web:v1", StaleWait, at(20, "zz"), at(100)), "a", "b")
	p := w.decide()
	var e *Error // what the hub shows as InvalidStrategy, with nothing written
	if !errors.As(p.Err, &e) || !strings.Contains(e.Message, "outside the placement: zz") || p.Write != NoWrite || len(p.Steps) != 0 || len(w.written) != 0 {
		t.Fatalf("want a refusal with nothing planned, got %+v", p)
	}

	w = newWorld(t, canary("ghcr.io/acme/web:v2", StaleWait, at(20, "a"), at(100)), "a", "b")
	w.holdings = map[string]Holding{"a": {Revision: "web-v2", Split: true}, "b": {Revision: "web-v1"}}
	p = w.decide()
	if p.Write != NoWrite || p.Held == "" || !strings.Contains(w.st.Message, "hold a canary in flight (web-v1 in b; web-v2 with a traffic split in a)") {
		t.Fatalf("want a hold with nothing written: %+v, %q", p, w.st.Message)
	}
	if p.Outcome.Reason != hubv1alpha1.ReasonStateLost {
		t.Fatalf("outcome %+v", p.Outcome)
	}
	// promote --full finishes it.
	w.request("full", hubv1alpha1.ActionPromote)
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "2/2", "")
	w.expectTrees(map[string]string{"a": w.rev() + "@100", "b": w.rev() + "@100"})

}

// A new revision's first step counts no cell as updated while the cells still run the last one,
// even when the app's per-cell summary has not caught up yet (it still names the last revision
// as each cell's desired one).
func TestUpdatedCountsOnlyTheNewRevision(t *testing.T) {
	w, v1 := deployed(t, StaleWait, threeSteps...)
	w.setImage("ghcr.io/acme/web:v2")
	w.app.Status.Revision = v1
	for _, c := range []string{"a", "b", "c"} {
		w.app.Status.CellStatuses = append(w.app.Status.CellStatuses, hubv1alpha1.CellAppStatus{Cell: c, Revision: v1, DesiredRevision: v1, Ready: true})
	}
	w.report(true, "", "a", "b", "c")
	w.decide()
	w.expect(hubv1alpha1.PhaseProgressing, "1/3", "")
	if w.st.UpdatedCells != 0 {
		t.Fatalf("%d cells counted as updated while every cell runs %s: %+v", w.st.UpdatedCells, v1, w.st.Cells)
	}
}
