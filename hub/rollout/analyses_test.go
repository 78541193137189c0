package rollout

import (
	"testing"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

func TestAnalyses(t *testing.T) {
	cell := func(name string, canary bool) hubv1alpha1.RolloutCell {
		return hubv1alpha1.RolloutCell{Cell: name, Canary: canary, Analysis: &hubv1alpha1.CellAnalysis{ID: "id"}}
	}
	report := func(phase string) agentv1alpha1.AnalysisReport {
		return agentv1alpha1.AnalysisReport{ID: "id", Phase: phase, Metrics: []agentv1alpha1.MetricReport{{Name: "error-rate", Phase: phase}}}
	}
	for _, tt := range []struct {
		name    string
		cells   []hubv1alpha1.RolloutCell
		reports map[string]agentv1alpha1.AnalysisReport
		want    hubv1alpha1.AnalysisPhase
	}{
		{"no analysed cell", []hubv1alpha1.RolloutCell{{Cell: "a", Canary: true}}, nil, ""},
		{"not reported yet", []hubv1alpha1.RolloutCell{cell("a", true)}, nil, hubv1alpha1.AnalysisRunning},
		{"all successful", []hubv1alpha1.RolloutCell{cell("a", true), cell("b", true)},
			map[string]agentv1alpha1.AnalysisReport{"a": report("Successful"), "b": report("Successful")}, hubv1alpha1.AnalysisSuccessful},
		{"one running", []hubv1alpha1.RolloutCell{cell("a", true), cell("b", true)},
			map[string]agentv1alpha1.AnalysisReport{"a": report("Successful")}, hubv1alpha1.AnalysisRunning},
		{"one failed", []hubv1alpha1.RolloutCell{cell("a", true), cell("b", true)},
			map[string]agentv1alpha1.AnalysisReport{"a": report("Inconclusive"), "b": report("Failed")}, hubv1alpha1.AnalysisFailed},
		{"a cell put back keeps its verdict out of the step's", []hubv1alpha1.RolloutCell{cell("a", true), cell("b", false)},
			map[string]agentv1alpha1.AnalysisReport{"a": report("Successful"), "b": report("Failed")}, hubv1alpha1.AnalysisSuccessful},
		{"a phase the hub does not know", []hubv1alpha1.RolloutCell{cell("a", true)},
			map[string]agentv1alpha1.AnalysisReport{"a": report("Passed!")}, hubv1alpha1.AnalysisRunning},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Analyses(tt.cells, Gate{Analyses: tt.reports})
			if got != tt.want {
				t.Fatalf("step's analysis %q, want %q", got, tt.want)
			}
			for _, c := range tt.cells {
				if rep, ok := tt.reports[c.Cell]; ok && c.Canary && len(c.Analysis.Metrics) != len(rep.Metrics) {
					t.Errorf("cell %s shows %d metrics, reported %d", c.Cell, len(c.Analysis.Metrics), len(rep.Metrics))
				}
			}
		})
	}
}
