package v1alpha1

import (
	"fmt"
	"net/url"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels the hub renders on every object of an app, naming the hub app; the agent reports
// health and finds analyses by them.
const (
	LabelApp          = "cellsync.io/app"
	LabelAppNamespace = "cellsync.io/app-namespace"
)

// AnalysisPath is the file of a cell branch holding the analysis of one hub app.
func AnalysisPath(appNamespace, app string) string {
	return AnalysisDir + "/" + appNamespace + "." + app + ".yaml"
}

// AnalysisKind is the kind of a rendered analysis file.
const AnalysisKind = "Analysis"

// AnalysisDir is the folder of a cell branch that holds the rendered analyses, one file per app
// (<app namespace>.<app>.yaml). Nothing under .cellsync/ is ever applied to the cluster.
const AnalysisDir = ".cellsync/analysis"

// Analysis is a canary step's analysis as the hub renders it into a cell branch: its metrics
// with every placeholder filled in for the cell. It is not an API object; like StatusReport, its
// format is the contract between hub and agent.
type Analysis struct {
	// APIVersion is agent.cellsync.io/v1alpha1 and Kind is Analysis.
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// ID names the step and what it measures; the hub matches the cell's verdict to it.
	ID string `json:"id"`
	// App and AppNamespace name the hub app measured; the analysis starts once the cell runs
	// the app Ready.
	App          string           `json:"app"`
	AppNamespace string           `json:"appNamespace"`
	Metrics      []AnalysisMetric `json:"metrics"`
}

// AnalysisMetric is one measurement, taken every interval: a PromQL query whose single value
// must lie in the threshold range, or an HTTP check. A metric succeeds after count successful
// measurements, fails after failureLimit+1 failed ones, and is inconclusive after
// inconclusiveLimit+1 measurements that could not decide (Prometheus unreachable, no data).
type AnalysisMetric struct {
	// Name names the metric in reports, events and status.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// Interval between measurements.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// Count is how many successful measurements the metric needs.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	Count int32 `json:"count,omitempty"`
	// FailureLimit is how many failed measurements are tolerated; one more fails the metric.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	FailureLimit int32 `json:"failureLimit,omitempty"`
	// InconclusiveLimit is how many inconclusive measurements are tolerated; one more makes the
	// metric inconclusive, which pauses the rollout.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	InconclusiveLimit int32 `json:"inconclusiveLimit,omitempty"`
	// ThresholdRange is where a measured value must lie (bounds included). For an HTTP check it
	// applies to the JSON field, when one is named.
	// +optional
	ThresholdRange ThresholdRange `json:"thresholdRange,omitempty"`
	// Prometheus measures a PromQL query against the cell's Prometheus (the address the cell's
	// owner set on its CellSync). The query may use {{app}}, {{namespace}} (the app's namespace
	// in the cell), {{cell}}, {{stable}} and {{canary}} (Knative revision names), and must
	// return one sample.
	// +optional
	Prometheus *PrometheusMetric `json:"prometheus,omitempty"`
	// HTTP is a smoke test run by the agent from inside the cell.
	// +optional
	HTTP *HTTPMetric `json:"http,omitempty"`
}

// ThresholdRange bounds a value; an unset bound is open.
type ThresholdRange struct {
	// +optional
	Min *float64 `json:"min,omitempty"`
	// +optional
	Max *float64 `json:"max,omitempty"`
}

// PrometheusMetric is a PromQL query.
type PrometheusMetric struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	Query string `json:"query"`
}

// HTTPMetric is a GET from inside the cell to a Service of the app's namespace there.
type HTTPMetric struct {
	// URL is http://<service>.{{namespace}}.svc[:port]/path (the same placeholders as queries);
	// the agent refuses any other host.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`
	// ExpectedStatus is the HTTP status a successful measurement answers with.
	// +kubebuilder:default=200
	// +optional
	ExpectedStatus int32 `json:"expectedStatus,omitempty"`
	// JSONField, when set, is a dot-separated path to a number in the JSON answer, which must
	// lie in the threshold range (for example "checks.errorRate").
	// +kubebuilder:validation:MaxLength=256
	// +optional
	JSONField string `json:"jsonField,omitempty"`
}

// AnalysisReport is how a cell's analysis of the commit it applied stands.
type AnalysisReport struct {
	ID           string `json:"id"`
	App          string `json:"app"`
	AppNamespace string `json:"appNamespace"`
	// Commit is the cell branch commit the analysis was measured for.
	Commit string `json:"commit"`
	// Phase is Running, Successful, Failed or Inconclusive.
	Phase   string         `json:"phase"`
	Metrics []MetricReport `json:"metrics,omitempty"`
}

// MetricReport is one metric's measurements in a cell, the last few of them kept.
type MetricReport struct {
	Name  string `json:"name"`
	Phase string `json:"phase"`
	// Query is the rendered query or URL, so that a person sees what was measured.
	Query        string        `json:"query,omitempty"`
	Successful   int32         `json:"successful,omitempty"`
	Failed       int32         `json:"failed,omitempty"`
	Inconclusive int32         `json:"inconclusive,omitempty"`
	Measurements []Measurement `json:"measurements,omitempty"`
}

// Measurement is one measurement of a metric.
type Measurement struct {
	Time metav1.Time `json:"time"`
	// Phase is Successful, Failed or Inconclusive.
	Phase string `json:"phase"`
	// Value is the measured value (absent when nothing was measured).
	// +optional
	Value *float64 `json:"value,omitempty"`
	// Message says what was found: the value against the range, or why nothing was.
	// +optional
	Message string `json:"message,omitempty"`
}

// Analysis phases, for reports.
const (
	AnalysisRunning      = "Running"
	AnalysisSuccessful   = "Successful"
	AnalysisFailed       = "Failed"
	AnalysisInconclusive = "Inconclusive"
)

// WorseAnalysis is the worse of two phases, as an analysis sums up its metrics and a step its
// cells: Failed, then Inconclusive, then Running, then Successful; "" (no analysis) is the best.
func WorseAnalysis(a, b string) string {
	rank := map[string]int{"": 0, AnalysisSuccessful: 1, AnalysisRunning: 2, AnalysisInconclusive: 3, AnalysisFailed: 4}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// MaxMeasurements is how many measurements per metric a report keeps (the newest).
const MaxMeasurements = 5

// CheckAnalysisURL allows what an HTTP check may reach: http or https to a Service of the app's
// namespace in the cell (<service>.<namespace>.svc, optionally .cluster.local, any port), with no
// credentials. The hub checks it before it renders, and the agent again before it measures.
func CheckAnalysisURL(raw, namespace string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("URL %q: only http and https are allowed", raw)
	}
	if u.User != nil {
		return fmt.Errorf("URL %q: credentials in URLs are refused", u.Redacted())
	}
	host := strings.TrimSuffix(u.Hostname(), ".cluster.local")
	parts := strings.Split(host, ".")
	if len(parts) != 3 || parts[2] != "svc" || parts[1] != namespace || parts[0] == "" {
		return fmt.Errorf("URL %q: an http check may only reach <service>.%s.svc, a Service of the app's namespace in the cell", raw, namespace)
	}
	return nil
}
