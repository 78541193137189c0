package analysis

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
)

// Budget bounds how long one wake-up spends measuring; what is left stays due for the next.
const Budget = 10 * time.Second

// DefaultInterval, DefaultCount and DefaultInconclusiveLimit apply when a rendered metric leaves
// them unset (the hub's API defaults them too).
const (
	DefaultInterval          = 30 * time.Second
	DefaultCount             = 3
	DefaultInconclusiveLimit = 3
)

// Run is one analysis of one applied commit, measured over time. It is not safe for concurrent
// use; the agent measures each CellSync from one reconcile at a time.
type Run struct {
	spec    agentv1alpha1.Analysis
	commit  string
	metrics []*metric
}

type metric struct {
	spec   agentv1alpha1.AnalysisMetric
	next   time.Time
	report agentv1alpha1.MetricReport
}

// New starts an analysis of a commit; its first measurements are due at start.
func New(a agentv1alpha1.Analysis, commit string, start time.Time) *Run {
	r := &Run{spec: a, commit: commit}
	for _, m := range a.Metrics {
		q := ""
		switch {
		case m.Prometheus != nil:
			q = m.Prometheus.Query
		case m.HTTP != nil:
			q = m.HTTP.URL
		}
		r.metrics = append(r.metrics, &metric{spec: m, next: start, report: agentv1alpha1.MetricReport{Name: m.Name, Phase: agentv1alpha1.AnalysisRunning, Query: bound(q)}})
	}
	return r
}

// ID is the rendered analysis' ID, and Commit the commit it measures.
func (r *Run) ID() string     { return r.spec.ID }
func (r *Run) Commit() string { return r.commit }

// Measure takes the measurements due at now, for at most budget, and returns when the next is
// due (zero when every metric has decided).
func (r *Run) Measure(ctx context.Context, now func() time.Time, meas Measurer, budget time.Duration) time.Time {
	deadline := now().Add(budget)
	for _, m := range r.metrics {
		if m.report.Phase != agentv1alpha1.AnalysisRunning || m.next.After(now()) {
			continue
		}
		if !now().Before(deadline) || ctx.Err() != nil {
			break
		}
		m.record(judge(ctx, m.spec, meas, now()))
		m.next = now().Add(orDefault(m.spec.Interval, DefaultInterval))
	}
	var next time.Time
	for _, m := range r.metrics {
		if m.report.Phase == agentv1alpha1.AnalysisRunning && (next.IsZero() || m.next.Before(next)) {
			next = m.next
		}
	}
	return next
}

// record adds a measurement and decides the metric when its count or a limit is reached. An
// inconclusive measurement never counts towards the count.
func (m *metric) record(x agentv1alpha1.Measurement) {
	rep := &m.report
	switch x.Phase {
	case agentv1alpha1.AnalysisSuccessful:
		rep.Successful++
	case agentv1alpha1.AnalysisFailed:
		rep.Failed++
	default:
		rep.Inconclusive++
	}
	rep.Measurements = append(rep.Measurements, x)
	if len(rep.Measurements) > agentv1alpha1.MaxMeasurements {
		rep.Measurements = rep.Measurements[len(rep.Measurements)-agentv1alpha1.MaxMeasurements:]
	}
	count := m.spec.Count
	if count <= 0 {
		count = DefaultCount
	}
	inconclusive := m.spec.InconclusiveLimit
	switch {
	case rep.Failed > m.spec.FailureLimit:
		rep.Phase = agentv1alpha1.AnalysisFailed
	case rep.Inconclusive > inconclusive:
		rep.Phase = agentv1alpha1.AnalysisInconclusive
	case rep.Successful >= count:
		rep.Phase = agentv1alpha1.AnalysisSuccessful
	}
}

// Report is where the analysis stands: Failed when a metric failed, Inconclusive when one could
// not decide, Successful when every metric succeeded, Running otherwise.
func (r *Run) Report() agentv1alpha1.AnalysisReport {
	out := agentv1alpha1.AnalysisReport{ID: r.spec.ID, App: r.spec.App, AppNamespace: r.spec.AppNamespace, Commit: r.commit, Phase: agentv1alpha1.AnalysisSuccessful}
	for _, m := range r.metrics {
		rep := m.report
		rep.Measurements = append([]agentv1alpha1.Measurement(nil), rep.Measurements...)
		out.Metrics = append(out.Metrics, rep)
		out.Phase = agentv1alpha1.WorseAnalysis(out.Phase, rep.Phase)
	}
	return out
}

func orDefault(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil || d.Duration <= 0 {
		return def
	}
	return d.Duration
}

func metaTime(t time.Time) metav1.Time { return metav1.NewTime(t.UTC().Truncate(time.Second)) }
