package manifests

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func appObject(ns, name, app, appNS string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("serving.knative.dev/v1")
	u.SetKind("Service")
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetLabels(map[string]string{"cellsync.io/app": app, "cellsync.io/app-namespace": appNS})
	return u
}

func analysisFile(app, appNS, metrics string) string {
	return fmt.Sprintf("apiVersion: agent.cellsync.io/v1alpha1\nkind: Analysis\nid: web-2-step1-abc\napp: %s\nappNamespace: %s\nmetrics:\n%s", app, appNS, metrics)
}

const promMetric = "- name: error-rate\n  interval: 30s\n  count: 3\n  thresholdRange: {max: 0.05}\n  prometheus: {query: 'sum(rate(x[1m]))'}\n"

func httpMetric(url string) string {
	return "- name: smoke\n  count: 1\n  http: {url: '" + url + "'}\n"
}

// What a branch can put in an analysis file, hostile cases included: everything outside the
// contract refuses the commit with a reason, and nothing makes the agent read without bound.
func TestLoadAnalyses(t *testing.T) {
	const path = ".cellsync/analysis/shop.web.yaml"
	web := []*unstructured.Unstructured{appObject("apps", "web", "web", "shop")}
	tests := []struct {
		name    string
		files   mapTree
		objs    []*unstructured.Unstructured
		metrics int
		reason  string
		message string
	}{
		{name: "a query", files: mapTree{path: analysisFile("web", "shop", promMetric)}, objs: web, metrics: 1},
		{name: "an http check to the app's namespace", files: mapTree{path: analysisFile("web", "shop", httpMetric("http://web.apps.svc.cluster.local:8080/healthz"))}, objs: web, metrics: 1},
		{name: "no file, no analysis", files: mapTree{}, objs: web},
		{name: "a file for an app the commit does not run is not read", files: mapTree{".cellsync/analysis/shop.other.yaml": "{{{"}, objs: web},
		{name: "the file of another app", files: mapTree{path: analysisFile("other", "shop", promMetric)}, objs: web,
			reason: ReasonInvalidBranch, message: "is the analysis of app shop/other, not shop/web"},
		{name: "an http check to the Kubernetes API", files: mapTree{path: analysisFile("web", "shop", httpMetric("https://kubernetes.default.svc/api"))}, objs: web,
			reason: ReasonPolicyViolation, message: "may only reach <service>.apps.svc"},
		{name: "an http check to the cloud metadata service", files: mapTree{path: analysisFile("web", "shop", httpMetric("http://169.254.169.254/latest/meta-data/"))}, objs: web,
			reason: ReasonPolicyViolation, message: "may only reach"},
		{name: "an http check to another namespace", files: mapTree{path: analysisFile("web", "shop", httpMetric("http://vault.secrets.svc/"))}, objs: web,
			reason: ReasonPolicyViolation, message: "may only reach <service>.apps.svc"},
		{name: "credentials in the URL", files: mapTree{path: analysisFile("web", "shop", httpMetric("http://u:p@web.apps.svc/"))}, objs: web,
			reason: ReasonPolicyViolation, message: "credentials"},
		{name: "a file URL", files: mapTree{path: analysisFile("web", "shop", httpMetric("file:///var/run/secrets/kubernetes.io/serviceaccount/token"))}, objs: web,
			reason: ReasonPolicyViolation, message: "only http and https"},
		{name: "an unknown field", files: mapTree{path: analysisFile("web", "shop", promMetric) + "address: http://evil.example.com\n"}, objs: web,
			reason: ReasonInvalidBranch, message: `unknown field "address"`},
		{name: "a metric of both kinds", files: mapTree{path: analysisFile("web", "shop", promMetric+"  http: {url: 'http://web.apps.svc/'}\n")}, objs: web,
			reason: ReasonPolicyViolation, message: "either a prometheus query or an http check"},
		{name: "an interval that would keep the agent busy", files: mapTree{path: analysisFile("web", "shop", strings.Replace(promMetric, "30s", "1ms", 1))}, objs: web,
			reason: ReasonPolicyViolation, message: "shorter than 1s"},
		{name: "a count past the limit", files: mapTree{path: analysisFile("web", "shop", strings.Replace(promMetric, "count: 3", "count: 100000", 1))}, objs: web,
			reason: ReasonPolicyViolation, message: "between 0 and 100"},
		{name: "too many metrics", files: mapTree{path: analysisFile("web", "shop", strings.Repeat(promMetric, MaxAnalysisMetrics+1))}, objs: web,
			reason: ReasonLimitExceeded, message: "more than 50 metrics"},
		{name: "an oversized file", files: mapTree{path: analysisFile("web", "shop", promMetric) + "# " + strings.Repeat("x", MaxAnalysisBytes)}, objs: web,
			reason: ReasonLimitExceeded, message: "the agent reads at most 65536"},
		{name: "an alias bomb", files: mapTree{path: "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"}, objs: web,
			reason: ReasonInvalidBranch},
		{name: "two documents", files: mapTree{path: analysisFile("web", "shop", promMetric) + "---\n" + analysisFile("web", "shop", promMetric)}, objs: web,
			reason: ReasonInvalidBranch, message: "one document"},
		{name: "a directory in its place", files: mapTree{path + "/x": "y"}, objs: web, reason: ReasonInvalidBranch, message: "not an analysis file"},
		{name: "another kind", files: mapTree{path: strings.Replace(analysisFile("web", "shop", promMetric), "kind: Analysis", "kind: CellSync", 1)}, objs: web,
			reason: ReasonInvalidBranch, message: "not an agent.cellsync.io/v1alpha1 Analysis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadAnalyses(tt.files, tt.objs)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				n := 0
				for _, a := range got {
					n += len(a.Metrics)
				}
				if n != tt.metrics {
					t.Fatalf("%d metrics, want %d", n, tt.metrics)
				}
				return
			}
			var inv *InvalidError
			if !errors.As(err, &inv) || inv.Reason != tt.reason || !strings.Contains(inv.Message, tt.message) {
				t.Fatalf("error %v, want %s saying %q", err, tt.reason, tt.message)
			}
			if len(inv.Message) > 2048 {
				t.Fatalf("a %d-byte message", len(inv.Message))
			}
		})
	}
}
