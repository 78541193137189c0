package analysis_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cellsync/cellsync/agent/analysis"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

func ptr(f float64) *float64 { return &f }

const errorRate = `sum(rate(revision_app_request_count{namespace_name="apps",revision_name="web-00002",response_code_class="5xx"}[5s])) / sum(rate(revision_app_request_count{namespace_name="apps",revision_name="web-00002"}[5s]))`

func promAnalysis(query string, count, failureLimit, inconclusiveLimit int32) agentv1alpha1.Analysis {
	return agentv1alpha1.Analysis{ID: "web-00002-step1-abc", App: "web", AppNamespace: "shop", Metrics: []agentv1alpha1.AnalysisMetric{{
		Name: "error-rate", Interval: &metav1.Duration{Duration: time.Second}, Count: count, FailureLimit: failureLimit, InconclusiveLimit: inconclusiveLimit,
		ThresholdRange: agentv1alpha1.ThresholdRange{Max: ptr(0.05)}, Prometheus: &agentv1alpha1.PrometheusMetric{Query: query},
	}}}
}

// measureUntilDecided measures with the real clock until the analysis decides.
func measureUntilDecided(t *testing.T, run *analysis.Run, meas analysis.Measurer) agentv1alpha1.AnalysisReport {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		next := run.Measure(context.Background(), time.Now, meas, analysis.Budget)
		if next.IsZero() {
			return run.Report()
		}
		time.Sleep(time.Until(next))
	}
	t.Fatalf("the analysis did not decide within 60 s: %+v", run.Report())
	return agentv1alpha1.AnalysisReport{}
}

// The agent's measurements against Debian's real Prometheus, scraping a synthetic queue-proxy
// exporter: a healthy canary passes, one with 20 % errors fails with the value measured, and a
// stopped Prometheus is inconclusive, never a pass.
func TestAnalysisAgainstPrometheus(t *testing.T) {
	exp, err := testenv.StartExporter("apps")
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	prom, err := testenv.StartPrometheus(exp.Target())
	if err != nil {
		t.Fatal(err)
	}
	defer prom.Stop()
	cell := &analysis.Cell{Address: prom.Address}

	exp.SetErrorRate("web-00002", 0)
	// The first measurements may find no data yet (two scrapes make a rate): inconclusive,
	// within the limit, and never counted as passes.
	rep := measureUntilDecided(t, analysis.New(promAnalysis(errorRate, 3, 0, 10), "c1", time.Now()), cell)
	m := rep.Metrics[0]
	if rep.Phase != agentv1alpha1.AnalysisSuccessful || m.Successful != 3 || m.Failed != 0 {
		t.Fatalf("healthy canary: %+v", rep)
	}
	if v := m.Measurements[len(m.Measurements)-1].Value; v == nil || *v != 0 {
		t.Fatalf("healthy canary measured %v", v)
	}

	exp.SetErrorRate("web-00002", 0.2)
	time.Sleep(6 * time.Second) // the 5 s rate window holds only the new share
	rep = measureUntilDecided(t, analysis.New(promAnalysis(errorRate, 3, 0, 10), "c2", time.Now()), cell)
	m = rep.Metrics[0]
	last := m.Measurements[len(m.Measurements)-1]
	if rep.Phase != agentv1alpha1.AnalysisFailed || last.Value == nil || *last.Value < 0.18 || *last.Value > 0.22 {
		t.Fatalf("20 %% errors: %+v", rep)
	}
	if !strings.Contains(last.Message, "is above the maximum 0.05") {
		t.Fatalf("message %q", last.Message)
	}

	prom.Stop()
	rep = measureUntilDecided(t, analysis.New(promAnalysis(errorRate, 3, 0, 2), "c3", time.Now()), cell)
	m = rep.Metrics[0]
	if rep.Phase != agentv1alpha1.AnalysisInconclusive || m.Inconclusive != 3 || m.Successful != 0 {
		t.Fatalf("stopped Prometheus: %+v", rep)
	}
	if !strings.Contains(m.Measurements[0].Message, "Prometheus did not answer") {
		t.Fatalf("message %q", m.Measurements[0].Message)
	}
}

// measurer is a scripted Measurer for the verdict rules.
type measurer struct {
	values []any // float64 or error, one per measurement
	n      int
}

func (m *measurer) Query(context.Context, string) (float64, error) {
	v := m.values[min(m.n, len(m.values)-1)]
	m.n++
	if err, ok := v.(error); ok {
		return 0, err
	}
	return v.(float64), nil
}

func (m *measurer) Get(context.Context, string) (int, []byte, error) { return 0, nil, errors.New("no") }

func TestVerdicts(t *testing.T) {
	nodata := &analysis.Inconclusive{Message: "the query returned no data"}
	tests := []struct {
		name                 string
		values               []any
		count, fail, inconcl int32
		phase                string
		succ, failed, incons int32
	}{
		{"passes after count", []any{0.01, 0.0, 0.02}, 3, 0, 3, agentv1alpha1.AnalysisSuccessful, 3, 0, 0},
		{"fails past the failure limit", []any{0.01, 0.2, 0.3}, 3, 1, 3, agentv1alpha1.AnalysisFailed, 1, 2, 0},
		{"a tolerated failure", []any{0.2, 0.01, 0.01, 0.01}, 3, 1, 3, agentv1alpha1.AnalysisSuccessful, 3, 1, 0},
		{"no data is inconclusive, never a pass", []any{nodata}, 3, 0, 2, agentv1alpha1.AnalysisInconclusive, 0, 0, 3},
		{"inconclusive within the limit does not count", []any{nodata, nodata, 0.01, 0.01, 0.01}, 3, 0, 2, agentv1alpha1.AnalysisSuccessful, 3, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
			clock := func() time.Time { return now }
			run := analysis.New(promAnalysis("q", tt.count, tt.fail, tt.inconcl), "c", now)
			meas := &measurer{values: tt.values}
			for i := 0; i < 20; i++ {
				next := run.Measure(context.Background(), clock, meas, time.Minute)
				if next.IsZero() {
					break
				}
				if !next.Equal(now.Add(time.Second)) {
					t.Fatalf("next measurement at %s, want one interval later", next)
				}
				now = next
			}
			rep := run.Report()
			m := rep.Metrics[0]
			if rep.Phase != tt.phase || m.Successful != tt.succ || m.Failed != tt.failed || m.Inconclusive != tt.incons {
				t.Fatalf("report %s with %d/%d/%d, want %s %d/%d/%d", rep.Phase, m.Successful, m.Failed, m.Inconclusive, tt.phase, tt.succ, tt.failed, tt.incons)
			}
			if len(m.Measurements) > agentv1alpha1.MaxMeasurements {
				t.Fatalf("%d measurements kept", len(m.Measurements))
			}
		})
	}
}

// HTTP checks against a real HTTP server, reached through the cluster-local name the check
// names; answers are bounded and redirects are not followed.
func TestHTTPChecks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stats":
			fmt.Fprint(w, `{"checks": {"errorRate": 0.01}}`)
		case "/bad":
			fmt.Fprint(w, `{"checks": {"errorRate": 0.4}}`)
		case "/huge":
			w.Write([]byte(strings.Repeat("x", analysis.MaxAnswer+10)))
		case "/redirect":
			http.Redirect(w, r, "http://169.254.169.254/", http.StatusFound)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	// The cluster's DNS name resolves to the test server.
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}
	cell := &analysis.Cell{HTTP: &http.Client{Transport: &http.Transport{DialContext: dial}}}
	check := func(path, field string, max *float64) agentv1alpha1.AnalysisReport {
		a := agentv1alpha1.Analysis{ID: "x", Metrics: []agentv1alpha1.AnalysisMetric{{Name: "smoke", Count: 1,
			ThresholdRange: agentv1alpha1.ThresholdRange{Max: max}, HTTP: &agentv1alpha1.HTTPMetric{URL: "http://web.apps.svc" + path, JSONField: field}}}}
		run := analysis.New(a, "c", time.Now())
		run.Measure(context.Background(), time.Now, cell, time.Minute)
		return run.Report()
	}
	for _, tt := range []struct {
		path, field string
		max         *float64
		phase, says string
	}{
		{"/stats", "checks.errorRate", ptr(0.05), agentv1alpha1.AnalysisSuccessful, "within the range"},
		{"/bad", "checks.errorRate", ptr(0.05), agentv1alpha1.AnalysisFailed, "0.4 is above the maximum 0.05"},
		{"/down", "", nil, agentv1alpha1.AnalysisFailed, "answered 503, want 200"},
		{"/stats", "checks.missing", ptr(0.05), agentv1alpha1.AnalysisFailed, "has no field checks.missing"},
		{"/huge", "checks.errorRate", ptr(0.05), agentv1alpha1.AnalysisInconclusive, "larger than"},
		{"/redirect", "", nil, agentv1alpha1.AnalysisFailed, "answered 302"},
	} {
		rep := check(tt.path, tt.field, tt.max)
		m := rep.Metrics[0]
		if rep.Phase != tt.phase || !strings.Contains(m.Measurements[0].Message, tt.says) {
			t.Errorf("%s: %s %q, want %s saying %q", tt.path, rep.Phase, m.Measurements[0].Message, tt.phase, tt.says)
		}
	}
}

// One wake-up spends at most its budget: checks against a service that never answers are cut
// at the measurement timeout, and the rest stays due for the next wake-up.
func TestStepBudget(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}
	cell := &analysis.Cell{HTTP: &http.Client{Transport: &http.Transport{DialContext: dial}}}
	a := agentv1alpha1.Analysis{ID: "x"}
	for i := 0; i < 4; i++ {
		a.Metrics = append(a.Metrics, agentv1alpha1.AnalysisMetric{Name: fmt.Sprintf("m%d", i), Count: 1, InconclusiveLimit: 5,
			HTTP: &agentv1alpha1.HTTPMetric{URL: "http://web.apps.svc/"}})
	}
	run := analysis.New(a, "c", time.Now())
	start := time.Now()
	next := run.Measure(context.Background(), time.Now, cell, analysis.Budget)
	took := time.Since(start)
	measured := 0
	for _, m := range run.Report().Metrics {
		measured += len(m.Measurements)
	}
	if measured != 2 || took > analysis.Budget+analysis.MeasureTimeout {
		t.Fatalf("measured %d checks in %s; want 2 within the budget", measured, took)
	}
	if next.IsZero() || next.After(time.Now()) {
		t.Fatalf("the unmeasured checks are not due at once: next %s", next)
	}
}
