package rollout

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/intake"
)

// CellSelection picks the cells of a step out of the placement's cells: by name, by label
// selector, by count, or by percent (at most one of Count and Percent; names and selector add
// to them). Picks are stable: by count and percent, cells are taken in name order.
type CellSelection struct {
	Names    []string
	Selector *metav1.LabelSelector
	Count    *int32
	Percent  *int32
}

// Step is one canary step.
type Step struct {
	Cells CellSelection
	// Weight is the canary's traffic share inside each masked cell, 0 to 100.
	Weight int32
}

// Selection is the API's cell pick as a CellSelection.
func Selection(c hubv1alpha1.StepCells) CellSelection {
	return CellSelection{Names: c.Names, Selector: c.Selector, Count: c.Count, Percent: c.Percent}
}

// Steps is the API's canary strategy as steps.
func Steps(s *hubv1alpha1.CanaryStrategy) []Step {
	if s == nil {
		return nil
	}
	out := make([]Step, 0, len(s.Steps))
	for _, st := range s.Steps {
		out = append(out, Step{Cells: Selection(st.Cells), Weight: st.Weight})
	}
	return out
}

// Error is input a person must fix.
type Error struct{ Message string }

func (e *Error) Error() string { return e.Message }

func fail(format string, args ...any) error { return &Error{Message: fmt.Sprintf(format, args...)} }

// Mask returns the names of the placed cells a step selects, sorted. A name that is not placed
// is an error: a step may not reach outside the placement.
func Mask(sel CellSelection, placed []*hubv1alpha1.Cell) ([]string, error) {
	byName := map[string]*hubv1alpha1.Cell{}
	names := make([]string, 0, len(placed))
	for _, c := range placed {
		byName[c.Name] = c
		names = append(names, c.Name)
	}
	sort.Strings(names)
	if sel.Count != nil && sel.Percent != nil {
		return nil, fail("a step takes cells by count or by percent, not both")
	}
	picked := map[string]bool{}
	var outside []string
	for _, n := range sel.Names {
		if _, ok := byName[n]; !ok {
			outside = append(outside, n)
			continue
		}
		picked[n] = true
	}
	if len(outside) > 0 {
		sort.Strings(outside)
		return nil, fail("the step names cells outside the placement: %s", strings.Join(outside, ", "))
	}
	if sel.Selector != nil {
		s, err := metav1.LabelSelectorAsSelector(sel.Selector)
		if err != nil {
			return nil, fail("the step's cell selector is invalid: %v", err)
		}
		for _, n := range names {
			if s.Matches(labels.Set(byName[n].Labels)) {
				picked[n] = true
			}
		}
	}
	want := 0
	switch {
	case sel.Count != nil:
		if *sel.Count < 0 {
			return nil, fail("a step's cell count must not be negative")
		}
		want = int(*sel.Count)
	case sel.Percent != nil:
		if *sel.Percent < 0 || *sel.Percent > 100 {
			return nil, fail("a step's cell percent %d is not between 0 and 100", *sel.Percent)
		}
		want = int(math.Ceil(float64(len(names)) * float64(*sel.Percent) / 100))
	}
	for _, n := range names {
		if len(picked) >= want {
			break
		}
		picked[n] = true
	}
	out := make([]string, 0, len(picked))
	for n := range picked {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// Validate checks a canary strategy against the placement before anything is rendered: weights
// between 0 and 100 and never decreasing, masks that stay inside the placement and never shrink,
// and a last step that ends at 100 % everywhere.
func Validate(steps []Step, placed []*hubv1alpha1.Cell) error {
	if len(steps) == 0 {
		return fail("a canary strategy needs at least one step")
	}
	prevWeight := int32(0)
	var prevMask map[string]bool
	for i, s := range steps {
		if s.Weight < 0 || s.Weight > 100 {
			return fail("step %d: traffic weight %d is not between 0 and 100", i+1, s.Weight)
		}
		mask, err := Mask(s.Cells, placed)
		if err != nil {
			return fail("step %d: %s", i+1, err.Error())
		}
		if len(mask) == 0 {
			return fail("step %d selects no cells", i+1)
		}
		cur := map[string]bool{}
		for _, n := range mask {
			cur[n] = true
		}
		for n := range prevMask {
			if !cur[n] {
				return fail("step %d drops cell %s that an earlier step updated; masks may only grow", i+1, n)
			}
		}
		if s.Weight < prevWeight && len(mask) == len(prevMask) {
			return fail("step %d lowers the canary weight from %d to %d on the same cells", i+1, prevWeight, s.Weight)
		}
		prevWeight, prevMask = s.Weight, cur
	}
	last := steps[len(steps)-1]
	if last.Weight != 100 || len(prevMask) != len(placed) {
		return fail("the last step must send 100%% of the traffic in every placed cell (it has %d%% in %d of %d cells)", last.Weight, len(prevMask), len(placed))
	}
	return nil
}

// StaleCellPolicy says what a gate does with a masked cell that has no fresh heartbeat.
type StaleCellPolicy string

// Stale cell policies.
const (
	StaleWait StaleCellPolicy = "Wait"
	StaleSkip StaleCellPolicy = "Skip"
	StaleFail StaleCellPolicy = "Fail"
)

// Expectation is what one masked cell must report for the step to complete.
type Expectation struct {
	Cell string
	// Commit is the cell branch commit the hub rendered for this step.
	Commit string
	// Since is when that commit was pushed, for the failure threshold.
	Since time.Time
	// AnalysisID, when set, is the analysis the cell must pass for Commit.
	AnalysisID string
}

// Gate is a step's gate, judged at one moment.
type Gate struct {
	// Complete is true when every masked cell passed (or was skipped by policy).
	Complete bool
	// Abort is true when a cell failed past the threshold, a cell's analysis failed, or a
	// stale cell is under policy Fail.
	Abort bool
	// Inconclusive is true when a cell's analysis could not decide: the rollout pauses.
	Inconclusive bool
	Reason       string
	Waiting      []string
	Skipped      []string
	Failed       []string
	// Notes says, per cell, why it has not passed ("" when it has).
	Notes map[string]string
	// Analyses are the cells' reported analyses of the step, by cell.
	Analyses map[string]agentv1alpha1.AnalysisReport
}

// Options tune a gate.
type Options struct {
	StaleAfter       time.Duration
	Policy           StaleCellPolicy
	FailureThreshold time.Duration
}

// Judge decides a step's gate from the cells' reports: a cell passes when it reports exactly
// the rendered commit, Ready, with a fresh heartbeat, and the app ready there.
func Judge(app, appNamespace string, cells []Expectation, reports *intake.Reports, now time.Time, o Options) Gate {
	g := Gate{Notes: map[string]string{}, Analyses: map[string]agentv1alpha1.AnalysisReport{}}
	var inconclusive []string
	note := func(cell, msg string) string {
		g.Notes[cell] = msg
		return fmt.Sprintf("%s: %s", cell, msg)
	}
	for _, exp := range cells {
		e, ok := reports.Get(exp.Cell)
		v := intake.View(e, ok, reports.PolledAt(), o.StaleAfter)
		switch {
		case !v.HasReport || v.Stale:
			switch o.Policy {
			case StaleSkip:
				g.Skipped = append(g.Skipped, exp.Cell)
				g.Notes[exp.Cell] = "skipped (stale): " + v.Message
			case StaleFail:
				g.Failed = append(g.Failed, note(exp.Cell, v.Message))
				g.Abort = true
			default:
				g.Waiting = append(g.Waiting, note(exp.Cell, v.Message))
			}
		case e.Report.AppliedCommit == "":
			g.Waiting = append(g.Waiting, note(exp.Cell, fmt.Sprintf("nothing applied yet, waiting for %s", short(exp.Commit))))
		case e.Report.AppliedCommit != exp.Commit:
			g.Waiting = append(g.Waiting, note(exp.Cell, fmt.Sprintf("applied %s, waiting for %s", short(e.Report.AppliedCommit), short(exp.Commit))))
		default:
			ready, msg := appReady(e.Report, app, appNamespace)
			an, measured := analysisOf(e.Report, exp)
			if measured {
				g.Analyses[exp.Cell] = an
			}
			switch {
			case ready && exp.AnalysisID == "":
			case ready && !measured:
				g.Waiting = append(g.Waiting, note(exp.Cell, "analysis not started yet"))
			case ready && an.Phase == agentv1alpha1.AnalysisSuccessful:
			case ready && an.Phase == agentv1alpha1.AnalysisFailed:
				g.Failed = append(g.Failed, note(exp.Cell, "analysis failed: "+AnalysisVerdict(an, agentv1alpha1.AnalysisFailed)))
				g.Abort = true
			case ready && an.Phase == agentv1alpha1.AnalysisInconclusive:
				inconclusive = append(inconclusive, note(exp.Cell, "analysis inconclusive: "+AnalysisVerdict(an, agentv1alpha1.AnalysisInconclusive)))
				g.Inconclusive = true
			case ready:
				g.Waiting = append(g.Waiting, note(exp.Cell, "analysis running: "+AnalysisVerdict(an, agentv1alpha1.AnalysisRunning)))
			case o.FailureThreshold > 0 && now.Sub(exp.Since) >= o.FailureThreshold:
				g.Failed = append(g.Failed, note(exp.Cell, msg))
				g.Abort = true
			default:
				g.Waiting = append(g.Waiting, note(exp.Cell, msg))
			}
		}
	}
	switch {
	case g.Abort:
		g.Reason = "Canary failed: " + some(g.Failed, "; ")
	case g.Inconclusive:
		g.Reason = "Analysis inconclusive: " + some(inconclusive, "; ")
	case len(g.Waiting) > 0:
		g.Reason = "Waiting for " + some(g.Waiting, "; ")
	default:
		g.Complete = true
		g.Reason = "Every masked cell reports the step"
		if len(g.Skipped) > 0 {
			g.Reason += "; skipped stale cells: " + some(g.Skipped, ", ")
		}
	}
	return g
}

// listed is how many cells a message names before it counts the rest: a step over thousands of
// cells says what it waits for in a line, and each cell's own note is in its entry.
const listed = 10

// some joins the first items of a list and counts the others.
func some(items []string, sep string) string {
	if len(items) <= listed {
		return strings.Join(items, sep)
	}
	return fmt.Sprintf("%s%sand %d more", strings.Join(items[:listed], sep), sep, len(items)-listed)
}

// analysisOf finds the cell's report of the expected analysis, measured for the expected commit.
func analysisOf(r agentv1alpha1.StatusReport, exp Expectation) (agentv1alpha1.AnalysisReport, bool) {
	if exp.AnalysisID == "" {
		return agentv1alpha1.AnalysisReport{}, false
	}
	for _, a := range r.Analyses {
		if a.ID == exp.AnalysisID && a.Commit == exp.Commit {
			return a, true
		}
	}
	return agentv1alpha1.AnalysisReport{}, false
}

// AnalysisVerdict says, in a bounded line, which metric of an analysis stands at phase and
// what it measured last: "metric error-rate = 0.2 (0.2 is above the maximum 0.05)".
func AnalysisVerdict(a agentv1alpha1.AnalysisReport, phase string) string {
	for _, m := range a.Metrics {
		if m.Phase != phase {
			continue
		}
		last := agentv1alpha1.Measurement{}
		if n := len(m.Measurements); n > 0 {
			last = m.Measurements[n-1]
		}
		what := "metric " + bounded(m.Name, 63)
		if last.Value != nil {
			what += fmt.Sprintf(" = %s", strconv.FormatFloat(*last.Value, 'g', 4, 64))
		}
		if phase == agentv1alpha1.AnalysisRunning {
			return fmt.Sprintf("%s, %d of its measurements passed", what, m.Successful)
		}
		if phase == agentv1alpha1.AnalysisInconclusive {
			what += " (query " + bounded(m.Query, 200) + ")"
		}
		if last.Message != "" {
			what += " (" + bounded(last.Message, 200) + ")"
		}
		return what
	}
	return "no metric " + strings.ToLower(phase)
}

// MetricResults is what a Rollout shows of a cell's reported metrics: at most
// hubv1alpha1.MaxAnalysisMetricsShown of them, each with its counts and its last value, names and
// messages cut short, whatever the report holds.
func MetricResults(a agentv1alpha1.AnalysisReport) []hubv1alpha1.MetricResult {
	var out []hubv1alpha1.MetricResult
	for _, m := range a.Metrics {
		if len(out) == hubv1alpha1.MaxAnalysisMetricsShown {
			break
		}
		r := hubv1alpha1.MetricResult{Name: bounded(m.Name, 63), Phase: KnownPhase(m.Phase), Successful: m.Successful, Failed: m.Failed, Inconclusive: m.Inconclusive}
		if n := len(m.Measurements); n > 0 {
			last := m.Measurements[n-1]
			if last.Value != nil {
				r.Value = strconv.FormatFloat(*last.Value, 'g', -1, 64)
			}
			r.Message = bounded(last.Message, 300)
		}
		out = append(out, r)
	}
	return out
}

// KnownPhase is a reported phase as the hub shows it: one it does not know (a report can say
// anything) is Running, as the gate judges it.
func KnownPhase(p string) hubv1alpha1.AnalysisPhase {
	switch p {
	case agentv1alpha1.AnalysisSuccessful, agentv1alpha1.AnalysisFailed, agentv1alpha1.AnalysisInconclusive:
		return hubv1alpha1.AnalysisPhase(p)
	}
	return hubv1alpha1.AnalysisRunning
}

func bounded(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func appReady(r agentv1alpha1.StatusReport, app, ns string) (bool, string) {
	for _, a := range r.Apps {
		if a.App == app && a.AppNamespace == ns {
			if a.Ready {
				return true, ""
			}
			return false, firstNonEmpty(a.Message, a.Reason, "not ready")
		}
	}
	return false, "the app is not running there yet"
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
