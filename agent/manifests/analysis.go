package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
)

// Analysis limits: what a commit's analyses may ask of the cell.
const (
	// MaxAnalysisBytes bounds one analysis file.
	MaxAnalysisBytes = 64 << 10
	// MaxAnalysisMetrics bounds the metrics of a commit's analyses together, so that a branch
	// cannot keep the agent measuring.
	MaxAnalysisMetrics = 50
)

// LoadAnalyses reads the analysis of each hub app the commit's objects belong to (at
// .cellsync/analysis/<app namespace>.<app>.yaml, never applied): bounded, strict, for the app
// whose file it is, with HTTP checks that reach only Services of the app's namespace in the
// cell. An app without a file has no analysis.
func LoadAnalyses(tree Tree, objs []*unstructured.Unstructured) ([]agentv1alpha1.Analysis, error) {
	type app struct{ namespace, name string }
	where := map[app]string{} // the app's namespace in the cell
	for _, u := range objs {
		l := u.GetLabels()
		if a := (app{l[agentv1alpha1.LabelAppNamespace], l[agentv1alpha1.LabelApp]}); a.name != "" {
			where[a] = u.GetNamespace()
		}
	}
	apps := make([]app, 0, len(where))
	for a := range where {
		apps = append(apps, a)
	}
	sort.Slice(apps, func(i, j int) bool { return apps[i].namespace+"/"+apps[i].name < apps[j].namespace+"/"+apps[j].name })
	var out []agentv1alpha1.Analysis
	metrics := 0
	for _, a := range apps {
		p := agentv1alpha1.AnalysisPath(a.namespace, a.name)
		kind, size, ok := tree.Entry(p)
		switch {
		case !ok:
			continue
		case kind != RegularFile:
			return nil, invalid(ReasonInvalidBranch, "%s is %s, not an analysis file", p, kind)
		case size > MaxAnalysisBytes:
			return nil, invalid(ReasonLimitExceeded, "analysis %s is %d bytes; the agent reads at most %d", p, size, MaxAnalysisBytes)
		}
		data, err := tree.Read(p)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", p, err)
		}
		an, err := decodeAnalysis(data)
		if err != nil {
			return nil, invalid(ReasonInvalidBranch, "%s: %v", p, err)
		}
		if an.App != a.name || an.AppNamespace != a.namespace {
			return nil, invalid(ReasonInvalidBranch, "%s is the analysis of app %s/%s, not %s/%s", p, an.AppNamespace, an.App, a.namespace, a.name)
		}
		if metrics += len(an.Metrics); metrics > MaxAnalysisMetrics {
			return nil, invalid(ReasonLimitExceeded, "the commit's analyses hold more than %d metrics", MaxAnalysisMetrics)
		}
		for _, m := range an.Metrics {
			if err := checkAnalysisMetric(m, where[a]); err != nil {
				return nil, invalid(ReasonPolicyViolation, "%s, metric %q: %v", p, m.Name, err)
			}
		}
		out = append(out, *an)
	}
	return out, nil
}

// decodeAnalysis decodes with the bounded YAML decoder, then strictly: an unknown field is an
// error, not something silently dropped.
func decodeAnalysis(data []byte) (*agentv1alpha1.Analysis, error) {
	docs, err := decodeDocuments(data, &budget{left: 10_000})
	if err != nil {
		return nil, err
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("an analysis file holds one document, this one %d", len(docs))
	}
	b, err := json.Marshal(docs[0])
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	an := &agentv1alpha1.Analysis{}
	if err := dec.Decode(an); err != nil {
		return nil, err
	}
	if an.APIVersion != agentv1alpha1.GroupVersion.String() || an.Kind != agentv1alpha1.AnalysisKind {
		return nil, fmt.Errorf("not an %s %s", agentv1alpha1.GroupVersion, agentv1alpha1.AnalysisKind)
	}
	if an.ID == "" || len(an.ID) > 253 {
		return nil, fmt.Errorf("the analysis needs an id of at most 253 characters")
	}
	return an, nil
}

// MinAnalysisInterval is the shortest interval between two measurements of a metric the agent
// accepts: a branch cannot make it measure without pause.
const MinAnalysisInterval = time.Second

func checkAnalysisMetric(m agentv1alpha1.AnalysisMetric, namespace string) error {
	if m.Count > 100 || m.FailureLimit > 100 || m.InconclusiveLimit > 100 || m.Count < 0 || m.FailureLimit < 0 || m.InconclusiveLimit < 0 {
		return fmt.Errorf("count and limits must lie between 0 and 100")
	}
	if m.Interval != nil && m.Interval.Duration < MinAnalysisInterval {
		return fmt.Errorf("the interval %s is shorter than %s", m.Interval.Duration, MinAnalysisInterval)
	}
	switch {
	case (m.Prometheus == nil) == (m.HTTP == nil):
		return fmt.Errorf("a metric is either a prometheus query or an http check")
	case m.HTTP != nil:
		return agentv1alpha1.CheckAnalysisURL(m.HTTP.URL, namespace)
	case len(m.Prometheus.Query) > 4096:
		return fmt.Errorf("the query is longer than 4096 characters")
	}
	return nil
}
