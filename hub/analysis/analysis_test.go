package analysis

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

func ptr(f float64) *float64 { return &f }

func template(metrics ...agentv1alpha1.AnalysisMetric) *hubv1alpha1.AnalysisTemplate {
	return &hubv1alpha1.AnalysisTemplate{ObjectMeta: metav1.ObjectMeta{Name: "errors", Namespace: "shop"}, Spec: hubv1alpha1.AnalysisTemplateSpec{Metrics: metrics}}
}

const errorRate = `sum(rate(revision_app_request_count{namespace="{{namespace}}",revision_name="{{canary}}",response_code_class="5xx"}[1m])) / sum(rate(revision_app_request_count{namespace="{{namespace}}",revision_name="{{canary}}"}[1m]))`

func TestCheck(t *testing.T) {
	prom := func(q string, r agentv1alpha1.ThresholdRange) agentv1alpha1.AnalysisMetric {
		return agentv1alpha1.AnalysisMetric{Name: "error-rate", Count: 3, ThresholdRange: r, Prometheus: &agentv1alpha1.PrometheusMetric{Query: q}}
	}
	httpCheck := func(u, field string, r agentv1alpha1.ThresholdRange) agentv1alpha1.AnalysisMetric {
		return agentv1alpha1.AnalysisMetric{Name: "smoke", Count: 1, ThresholdRange: r, HTTP: &agentv1alpha1.HTTPMetric{URL: u, JSONField: field}}
	}
	tests := []struct {
		name   string
		t      *hubv1alpha1.AnalysisTemplate
		errHas string
	}{
		{"an error rate below 5 %", template(prom(errorRate, agentv1alpha1.ThresholdRange{Max: ptr(0.05)})), ""},
		{"an http smoke test", template(httpCheck("http://web.{{namespace}}.svc/healthz", "", agentv1alpha1.ThresholdRange{})), ""},
		{"an http check with a JSON field", template(httpCheck("http://web.{{namespace}}.svc.cluster.local:8080/stats", "checks.errors", agentv1alpha1.ThresholdRange{Max: ptr(0)})), ""},
		{"invalid PromQL", template(prom(`sum(rate(x[1m]`, agentv1alpha1.ThresholdRange{Max: ptr(1)})), "invalid PromQL"},
		{"min above max", template(prom(errorRate, agentv1alpha1.ThresholdRange{Min: ptr(0.5), Max: ptr(0.1)})), "min 0.5 is above max 0.1"},
		{"a query without a range", template(prom(errorRate, agentv1alpha1.ThresholdRange{})), "needs a thresholdRange"},
		{"an unknown placeholder", template(prom(`up{job="{{job}}"}`, agentv1alpha1.ThresholdRange{Min: ptr(1)})), "unknown placeholder {{job}}"},
		{"neither kind", template(agentv1alpha1.AnalysisMetric{Name: "x", ThresholdRange: agentv1alpha1.ThresholdRange{Max: ptr(1)}}), "exactly one"},
		{"both kinds", template(func() agentv1alpha1.AnalysisMetric {
			m := prom(errorRate, agentv1alpha1.ThresholdRange{Max: ptr(1)})
			m.HTTP = &agentv1alpha1.HTTPMetric{URL: "http://web.{{namespace}}.svc/"}
			return m
		}()), "exactly one"},
		{"an http check outside the app's namespace", template(httpCheck("http://kubernetes.default.svc/", "", agentv1alpha1.ThresholdRange{})), "may only reach <service>.ns.svc"},
		{"an http check to an IP", template(httpCheck("http://169.254.169.254/latest/meta-data", "", agentv1alpha1.ThresholdRange{})), "may only reach"},
		{"credentials in the URL", template(httpCheck("http://u:p@web.{{namespace}}.svc/", "", agentv1alpha1.ThresholdRange{})), "credentials"},
		{"a file URL", template(httpCheck("file:///etc/passwd", "", agentv1alpha1.ThresholdRange{})), "only http and https"},
		{"a duplicate name", template(prom(errorRate, agentv1alpha1.ThresholdRange{Max: ptr(1)}), prom(errorRate, agentv1alpha1.ThresholdRange{Max: ptr(1)})), "used twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.t)
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Reason != hubv1alpha1.ReasonInvalidAnalysis || !strings.Contains(e.Message, tt.errHas) {
				t.Fatalf("error %v, want InvalidAnalysis saying %q", err, tt.errHas)
			}
			if !strings.Contains(e.Message, "AnalysisTemplate errors") {
				t.Errorf("the message does not name the template: %s", e.Message)
			}
		})
	}
}

func TestRender(t *testing.T) {
	tmpl := template(agentv1alpha1.AnalysisMetric{Name: "error-rate", Count: 3, ThresholdRange: agentv1alpha1.ThresholdRange{Max: ptr(0.05)}, Prometheus: &agentv1alpha1.PrometheusMetric{Query: errorRate}})
	v := Vars{App: "web", Namespace: "apps", Cell: "cell-1", Stable: "web-00001", Canary: "web-00002"}
	a, err := Render([]*hubv1alpha1.AnalysisTemplate{tmpl}, 1, 0, v)
	if err != nil {
		t.Fatal(err)
	}
	q := a.Metrics[0].Prometheus.Query
	if strings.Contains(q, "{{") || !strings.Contains(q, `revision_name="web-00002"`) || !strings.Contains(q, `namespace="apps"`) {
		t.Fatalf("query not rendered: %s", q)
	}
	if tmpl.Spec.Metrics[0].Prometheus.Query != errorRate {
		t.Fatal("rendering changed the template")
	}
	b, _ := Render([]*hubv1alpha1.AnalysisTemplate{tmpl}, 2, 0, v)
	again, _ := Render([]*hubv1alpha1.AnalysisTemplate{tmpl}, 1, 0, v)
	retry, _ := Render([]*hubv1alpha1.AnalysisTemplate{tmpl}, 1, 1, v)
	if a.ID == b.ID || a.ID != again.ID || a.ID == retry.ID || !strings.HasPrefix(a.ID, "web-00002-step1-") {
		t.Fatalf("IDs: step 1 %s, step 2 %s, step 1 again %s, step 1 retried %s", a.ID, b.ID, again.ID, retry.ID)
	}
	if _, err := Render([]*hubv1alpha1.AnalysisTemplate{tmpl, tmpl}, 1, 0, v); err == nil || !strings.Contains(err.Error(), "must differ") {
		t.Fatalf("two templates with one metric name: %v", err)
	}
}
