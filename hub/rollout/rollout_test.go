package rollout

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/intake"
)

func cells(names ...string) []*hubv1alpha1.Cell {
	out := make([]*hubv1alpha1.Cell, 0, len(names))
	for _, n := range names {
		env := "prod"
		if strings.HasPrefix(n, "t") {
			env = "test"
		}
		out = append(out, &hubv1alpha1.Cell{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{hubv1alpha1.LabelEnv: env}}})
	}
	return out
}

func TestMask(t *testing.T) {
	placed := cells("a", "b", "c", "d", "t1")
	tests := []struct {
		name string
		sel  CellSelection
		want []string
		err  string
	}{
		{"by name", CellSelection{Names: []string{"c", "a"}}, []string{"a", "c"}, ""},
		{"by selector", CellSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{hubv1alpha1.LabelEnv: "test"}}}, []string{"t1"}, ""},
		{"by count, in name order", CellSelection{Count: ptr.To[int32](2)}, []string{"a", "b"}, ""},
		{"by percent, rounded up", CellSelection{Percent: ptr.To[int32](50)}, []string{"a", "b", "c"}, ""},
		{"count on top of names", CellSelection{Names: []string{"d"}, Count: ptr.To[int32](2)}, []string{"a", "d"}, ""},
		{"all", CellSelection{Percent: ptr.To[int32](100)}, []string{"a", "b", "c", "d", "t1"}, ""},
		{"outside the placement", CellSelection{Names: []string{"a", "zz"}}, nil, "outside the placement: zz"},
		{"count and percent", CellSelection{Count: ptr.To[int32](1), Percent: ptr.To[int32](10)}, nil, "not both"},
		{"percent over 100", CellSelection{Percent: ptr.To[int32](150)}, nil, "not between 0 and 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Mask(tt.sel, placed)
			if tt.err != "" {
				var e *Error
				if !errors.As(err, &e) || !strings.Contains(e.Message, tt.err) {
					t.Fatalf("want error %q, got %v", tt.err, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatal(d)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	placed := cells("a", "b", "c", "d")
	a := CellSelection{Names: []string{"a"}}
	ab := CellSelection{Names: []string{"a", "b"}}
	all := CellSelection{Percent: ptr.To[int32](100)}
	// The walk: [A 10 %] → [A 50 %] → [A, B 50 %] → [all 100 %].
	if err := Validate([]Step{{a, 10}, {a, 50}, {ab, 50}, {all, 100}}, placed); err != nil {
		t.Fatalf("the canonical walk is valid: %v", err)
	}
	for name, tc := range map[string]struct {
		steps []Step
		err   string
	}{
		"weight over 100":          {[]Step{{a, 120}, {all, 100}}, "weight 120 is not between 0 and 100"},
		"cell outside placement":   {[]Step{{CellSelection{Names: []string{"x"}}, 10}, {all, 100}}, "outside the placement: x"},
		"shrinking mask":           {[]Step{{ab, 10}, {a, 50}, {all, 100}}, "drops cell b"},
		"lower weight, same cells": {[]Step{{a, 50}, {a, 10}, {all, 100}}, "lowers the canary weight"},
		"not ending everywhere":    {[]Step{{a, 10}, {ab, 100}}, "last step must send 100%"},
		"no steps":                 {nil, "at least one step"},
	} {
		t.Run(name, func(t *testing.T) {
			err := Validate(tc.steps, placed)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("want %q, got %v", tc.err, err)
			}
		})
	}
}

func TestJudge(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	report := func(commit string, age time.Duration, appReady bool, msg string) intake.Entry {
		return intake.Entry{Commit: "s", Seen: now.Add(-age), Report: agentv1alpha1.StatusReport{
			HeartbeatTime: metav1.NewTime(now.Add(-age)), AppliedCommit: commit,
			Conditions: []metav1.Condition{{Type: meta.ReadyCondition, Status: metav1.ConditionTrue}},
			Apps:       []agentv1alpha1.AppReport{{App: "web", AppNamespace: "team", Ready: appReady, Message: msg}},
		}}
	}
	exp := func(cells ...string) []Expectation {
		var out []Expectation
		for _, c := range cells {
			out = append(out, Expectation{Cell: c, Commit: "new-" + c, Since: now.Add(-time.Minute)})
		}
		return out
	}
	opts := Options{StaleAfter: 2 * time.Minute, Policy: StaleWait, FailureThreshold: 5 * time.Minute}
	tests := []struct {
		name     string
		reports  map[string]intake.Entry
		policy   StaleCellPolicy
		complete bool
		abort    bool
		reason   string
	}{
		{"all report the commit, ready", map[string]intake.Entry{"a": report("new-a", time.Second, true, ""), "b": report("new-b", time.Second, true, "")}, StaleWait, true, false, "Every masked cell"},
		{"one on an older commit", map[string]intake.Entry{"a": report("new-a", time.Second, true, ""), "b": report("old-b", time.Second, true, "")}, StaleWait, false, false, "b: applied old-b, waiting for new-b"},
		{"one that applied nothing yet", map[string]intake.Entry{"a": report("new-a", time.Second, true, ""), "b": report("", time.Second, false, "")}, StaleWait, false, false, "b: nothing applied yet, waiting for new-b"},
		{"ready with a stale heartbeat waits", map[string]intake.Entry{"a": report("new-a", time.Second, true, ""), "b": report("new-b", 10*time.Minute, true, "")}, StaleWait, false, false, "b: No heartbeat since"},
		{"stale cell skipped by policy", map[string]intake.Entry{"a": report("new-a", time.Second, true, ""), "b": report("new-b", 10*time.Minute, true, "")}, StaleSkip, true, false, "skipped stale cells: b"},
		{"stale cell fails by policy", map[string]intake.Entry{"a": report("new-a", time.Second, true, "")}, StaleFail, false, true, "b: No report"},
		{"canary not ready, within threshold", map[string]intake.Entry{"a": report("new-a", time.Second, false, "RevisionFailed"), "b": report("new-b", time.Second, true, "")}, StaleWait, false, false, "a: RevisionFailed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := intake.NewReports()
			for c, e := range tt.reports {
				rs.Put(c, e)
			}
			rs.Polled(now)
			o := opts
			o.Policy = tt.policy
			g := Judge("web", "team", exp("a", "b"), rs, now, o)
			if g.Complete != tt.complete || g.Abort != tt.abort || !strings.Contains(g.Reason, tt.reason) {
				t.Fatalf("gate = %+v", g)
			}
		})
	}

	// Past the failure threshold, a canary that is not ready aborts the rollout.
	rs := intake.NewReports()
	rs.Put("a", report("new-a", time.Second, false, `Revision "web-2" failed with message: image pull failed.`))
	rs.Polled(now)
	late := []Expectation{{Cell: "a", Commit: "new-a", Since: now.Add(-6 * time.Minute)}}
	g := Judge("web", "team", late, rs, now, opts)
	if !g.Abort || !strings.Contains(g.Reason, "image pull failed") {
		t.Fatalf("gate = %+v", g)
	}
}

// The gate over analysis verdicts: only a Successful verdict for the step's analysis and commit
// passes; Failed aborts naming the metric and value; Inconclusive pauses naming the query; a
// verdict for another id or commit counts for nothing.
func TestJudgeAnalysis(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	value := 0.2
	verdict := func(id, commit, phase string) agentv1alpha1.AnalysisReport {
		return agentv1alpha1.AnalysisReport{ID: id, Commit: commit, Phase: phase, Metrics: []agentv1alpha1.MetricReport{{
			Name: "error-rate", Phase: phase, Query: "sum(rate(x[1m]))", Successful: 1,
			Measurements: []agentv1alpha1.Measurement{{Phase: phase, Value: &value, Message: "0.2 is above the maximum 0.05"}}}}}
	}
	entry := func(analyses ...agentv1alpha1.AnalysisReport) intake.Entry {
		return intake.Entry{Commit: "s", Seen: now, Report: agentv1alpha1.StatusReport{AppliedCommit: "c2",
			Conditions: []metav1.Condition{{Type: meta.ReadyCondition, Status: metav1.ConditionTrue}},
			Apps:       []agentv1alpha1.AppReport{{App: "web", AppNamespace: "team", Ready: true}}, Analyses: analyses}}
	}
	exp := []Expectation{{Cell: "a", Commit: "c2", Since: now, AnalysisID: "id-1"}}
	for _, tt := range []struct {
		name                          string
		entry                         intake.Entry
		complete, abort, inconclusive bool
		reason                        string
	}{
		{"no verdict yet", entry(), false, false, false, "a: analysis not started yet"},
		{"running", entry(verdict("id-1", "c2", agentv1alpha1.AnalysisRunning)), false, false, false, "a: analysis running: metric error-rate = 0.2, 1 of its measurements passed"},
		{"successful", entry(verdict("id-1", "c2", agentv1alpha1.AnalysisSuccessful)), true, false, false, "Every masked cell"},
		{"successful for another commit", entry(verdict("id-1", "c1", agentv1alpha1.AnalysisSuccessful)), false, false, false, "analysis not started yet"},
		{"successful for another analysis", entry(verdict("id-0", "c2", agentv1alpha1.AnalysisSuccessful)), false, false, false, "analysis not started yet"},
		{"failed", entry(verdict("id-1", "c2", agentv1alpha1.AnalysisFailed)), false, true, false, "a: analysis failed: metric error-rate = 0.2 (0.2 is above the maximum 0.05)"},
		{"inconclusive", entry(verdict("id-1", "c2", agentv1alpha1.AnalysisInconclusive)), false, false, true, "a: analysis inconclusive: metric error-rate = 0.2 (query sum(rate(x[1m])))"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rs := intake.NewReports()
			rs.Put("a", tt.entry)
			rs.Polled(now)
			g := Judge("web", "team", exp, rs, now, Options{StaleAfter: time.Minute})
			if g.Complete != tt.complete || g.Abort != tt.abort || g.Inconclusive != tt.inconclusive || !strings.Contains(g.Reason, tt.reason) {
				t.Fatalf("gate = %+v", g)
			}
		})
	}
}

// A cell that controls its report fills it with huge metric names, queries and messages: what
// the gate says about it stays short.
func TestJudgeBoundsHostileAnalysis(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	huge := strings.Repeat("x", 1<<20)
	value := 1.0
	var metrics []agentv1alpha1.MetricReport
	for i := 0; i < 1000; i++ {
		metrics = append(metrics, agentv1alpha1.MetricReport{Name: huge, Phase: agentv1alpha1.AnalysisFailed, Query: huge,
			Measurements: []agentv1alpha1.Measurement{{Phase: agentv1alpha1.AnalysisFailed, Value: &value, Message: huge}}})
	}
	rs := intake.NewReports()
	rs.Put("a", intake.Entry{Commit: "s", Seen: now, Report: agentv1alpha1.StatusReport{AppliedCommit: "c2",
		Conditions: []metav1.Condition{{Type: meta.ReadyCondition, Status: metav1.ConditionTrue}},
		Apps:       []agentv1alpha1.AppReport{{App: "web", AppNamespace: "team", Ready: true}},
		Analyses:   []agentv1alpha1.AnalysisReport{{ID: "id-1", Commit: "c2", Phase: agentv1alpha1.AnalysisFailed, Metrics: metrics}}}})
	rs.Polled(now)
	g := Judge("web", "team", []Expectation{{Cell: "a", Commit: "c2", Since: now, AnalysisID: "id-1"}}, rs, now, Options{StaleAfter: time.Minute})
	if !g.Abort || len(g.Reason) > 2048 || len(g.Notes["a"]) > 2048 {
		t.Fatalf("abort %v, a reason of %d bytes and a note of %d", g.Abort, len(g.Reason), len(g.Notes["a"]))
	}
	// What the Rollout's status shows of it is bounded too, and a phase the hub does not know is
	// shown as Running.
	metrics[0].Phase = huge
	shown := MetricResults(g.Analyses["a"])
	size := 0
	for _, m := range shown {
		size += len(m.Name) + len(m.Message) + len(m.Value) + len(m.Phase)
	}
	if len(shown) != hubv1alpha1.MaxAnalysisMetricsShown || size > 10*2048 || MetricResults(agentv1alpha1.AnalysisReport{Metrics: metrics[:1]})[0].Phase != hubv1alpha1.AnalysisRunning {
		t.Fatalf("%d metrics shown in %d bytes", len(shown), size)
	}
}
