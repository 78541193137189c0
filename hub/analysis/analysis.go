package analysis

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// Error is a template a person must fix; nothing is written while it stands.
type Error struct {
	Reason  string
	Message string
}

func (e *Error) Error() string { return e.Message }

func invalid(template, metric, format string, args ...any) error {
	return &Error{Reason: hubv1alpha1.ReasonInvalidAnalysis, Message: fmt.Sprintf("AnalysisTemplate %s, metric %s: %s", template, metric, fmt.Sprintf(format, args...))}
}

// Vars are what a template's placeholders stand for in one cell.
type Vars struct {
	// App and AppNamespace name the hub app; Namespace is where it runs in the cell.
	App, AppNamespace, Namespace, Cell string
	// Stable and Canary are the Knative revision names the step splits traffic between
	// (Stable is empty when the cell ran no earlier revision).
	Stable, Canary string
}

var placeholder = regexp.MustCompile(`\{\{\s*([a-zA-Z]*)\s*\}\}`)

// expand fills the placeholders; an unknown one is an error.
func expand(s string, v Vars) (string, error) {
	var unknown []string
	out := placeholder.ReplaceAllStringFunc(s, func(m string) string {
		switch strings.TrimSpace(placeholder.FindStringSubmatch(m)[1]) {
		case "app":
			return v.App
		case "namespace":
			return v.Namespace
		case "cell":
			return v.Cell
		case "stable":
			return v.Stable
		case "canary":
			return v.Canary
		}
		unknown = append(unknown, m)
		return m
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown placeholder %s (known: {{app}}, {{namespace}}, {{cell}}, {{stable}}, {{canary}})", strings.Join(unknown, ", "))
	}
	return out, nil
}

// sample stands in for every placeholder when a template is checked.
var sample = Vars{App: "app", Namespace: "ns", Cell: "cell", Stable: "app-00001", Canary: "app-00002"}

// Check validates a template as the agents will measure it.
func Check(t *hubv1alpha1.AnalysisTemplate) error {
	seen := map[string]bool{}
	for _, m := range t.Spec.Metrics {
		if seen[m.Name] {
			return invalid(t.Name, m.Name, "the name is used twice")
		}
		seen[m.Name] = true
		if _, err := renderMetric(m, sample); err != nil {
			return invalid(t.Name, m.Name, "%s", err.Error())
		}
	}
	if len(t.Spec.Metrics) == 0 {
		return &Error{Reason: hubv1alpha1.ReasonInvalidAnalysis, Message: fmt.Sprintf("AnalysisTemplate %s has no metrics", t.Name)}
	}
	return nil
}

// renderMetric fills a metric's placeholders with v and checks the result as the agent will
// measure it: the PromQL parsed, the URL one the agent may reach.
func renderMetric(m agentv1alpha1.AnalysisMetric, v Vars) (agentv1alpha1.AnalysisMetric, error) {
	r := m.ThresholdRange
	if r.Min != nil && r.Max != nil && *r.Min > *r.Max {
		return m, fmt.Errorf("thresholdRange min %g is above max %g", *r.Min, *r.Max)
	}
	if m.Count < 0 || m.FailureLimit < 0 || m.InconclusiveLimit < 0 {
		return m, fmt.Errorf("count and limits must not be negative")
	}
	m = *m.DeepCopy()
	var err error
	switch {
	case (m.Prometheus == nil) == (m.HTTP == nil):
		return m, fmt.Errorf("a metric is either a prometheus query or an http check, exactly one of them")
	case m.Prometheus != nil:
		if r.Min == nil && r.Max == nil {
			return m, fmt.Errorf("a prometheus query needs a thresholdRange (min, max or both)")
		}
		if m.Prometheus.Query, err = expand(m.Prometheus.Query, v); err != nil {
			return m, err
		}
		if _, err := parser.NewParser(parser.Options{}).ParseExpr(m.Prometheus.Query); err != nil {
			return m, fmt.Errorf("invalid PromQL: %v", err)
		}
	default:
		if m.HTTP.URL, err = expand(m.HTTP.URL, v); err != nil {
			return m, err
		}
		if err := agentv1alpha1.CheckAnalysisURL(m.HTTP.URL, v.Namespace); err != nil {
			return m, err
		}
		if m.HTTP.JSONField == "" && (r.Min != nil || r.Max != nil) {
			return m, fmt.Errorf("a thresholdRange on an http check needs a jsonField to measure")
		}
	}
	return m, nil
}

// Render is a step's templates for one cell: every metric with its placeholders filled in, and
// an ID naming the step, the attempt and what is measured (a new attempt is measured afresh).
func Render(templates []*hubv1alpha1.AnalysisTemplate, step, attempt int32, v Vars) (*agentv1alpha1.Analysis, error) {
	a := &agentv1alpha1.Analysis{APIVersion: agentv1alpha1.GroupVersion.String(), Kind: agentv1alpha1.AnalysisKind, App: v.App, AppNamespace: v.AppNamespace}
	seen := map[string]string{}
	for _, t := range templates {
		for _, m := range t.Spec.Metrics {
			if other, ok := seen[m.Name]; ok {
				return nil, invalid(t.Name, m.Name, "AnalysisTemplate %s has a metric of the same name; metric names must differ across a step's templates", other)
			}
			seen[m.Name] = t.Name
			rendered, err := renderMetric(m, v)
			if err != nil {
				return nil, invalid(t.Name, m.Name, "%s", err.Error())
			}
			a.Metrics = append(a.Metrics, rendered)
		}
	}
	b, err := json.Marshal(a.Metrics)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte(fmt.Sprintf("%s/%d/%d/", v.Canary, step, attempt)), b...))
	a.ID = fmt.Sprintf("%s-step%d-%s", v.Canary, step, hex.EncodeToString(sum[:])[:8])
	return a, nil
}
