package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
)

// AnalysisTemplateSpec is a set of metrics a canary step must pass in every cell it touches.
// The hub renders it per cell into the cell's branch (under .cellsync/, never applied); the
// cell's agent measures it against the cell's own Prometheus, or with HTTP checks inside the
// cell, and reports the verdicts back through Git.
type AnalysisTemplateSpec struct {
	// Metrics are measured independently; the analysis succeeds when every metric does.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	// +listType=map
	// +listMapKey=name
	Metrics []agentv1alpha1.AnalysisMetric `json:"metrics"`
}

// AnalysisTemplateStatus says whether the template is valid.
type AnalysisTemplateStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AnalysisTemplate is a reusable canary analysis: metrics measured in each cell a canary step
// touches, where the metrics are.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=at,categories=cellsync
// +kubebuilder:printcolumn:name="Metrics",type=string,JSONPath=`.spec.metrics[*].name`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AnalysisTemplate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AnalysisTemplateSpec `json:"spec,omitempty"`
	// +optional
	Status AnalysisTemplateStatus `json:"status,omitempty"`
}

// AnalysisTemplateList is a list of AnalysisTemplates.
// +kubebuilder:object:root=true
type AnalysisTemplateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AnalysisTemplate `json:"items"`
}

// StepAnalysis names the templates measured at a step.
type StepAnalysis struct {
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=5
	Templates []AnalysisTemplateRef `json:"templates"`
}

// AnalysisTemplateRef names an AnalysisTemplate in the app's namespace.
type AnalysisTemplateRef struct {
	Name string `json:"name"`
}

func init() {
	register(&AnalysisTemplate{}, &AnalysisTemplateList{})
}
