package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RolloutAction is what a RolloutStep asks of its rollout.
// +kubebuilder:validation:Enum=Advance;Promote;Pause;Resume;Abort;Undo
type RolloutAction string

// Rollout actions.
const (
	// ActionAdvance moves to the next strategy step (or spec.step) once the current one is
	// healthy; it also approves a pause.
	ActionAdvance RolloutAction = "Advance"
	// ActionPromote skips every remaining step, gate and pause: 100 % everywhere.
	ActionPromote RolloutAction = "Promote"
	// ActionPause stops automatic advances; ActionResume lets them go on.
	ActionPause  RolloutAction = "Pause"
	ActionResume RolloutAction = "Resume"
	// ActionAbort moves every touched cell back to its last-known-good commit.
	ActionAbort RolloutAction = "Abort"
	// ActionUndo rolls forward to an earlier revision from the rollout's history.
	ActionUndo RolloutAction = "Undo"
)

// RolloutStepPhase is where a RolloutStep stands.
type RolloutStepPhase string

// RolloutStep phases.
const (
	// StepPending: not acted on yet.
	StepPending RolloutStepPhase = "Pending"
	// StepApplied: acted on; an Advance waits here for its cells to pass the gate.
	StepApplied RolloutStepPhase = "Applied"
	// StepSucceeded: done (an Advance's cells passed the gate).
	StepSucceeded RolloutStepPhase = "Succeeded"
	// StepRefused: not acted on, with the reason in the message; nothing was written to Git.
	StepRefused RolloutStepPhase = "Refused"
	// StepSuperseded: a newer revision, an abort or a promotion replaced it before it finished.
	StepSuperseded RolloutStepPhase = "Superseded"
)

// RolloutStepSpec is one request to move a rollout. People, CI and the hub create them; the hub
// takes them in creation order.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a RolloutStep cannot be changed; create a new one"
type RolloutStepSpec struct {
	// RolloutRef names the Rollout (the app's name) in the same namespace.
	RolloutRef corev1.LocalObjectReference `json:"rolloutRef"`
	// Action is what to do.
	Action RolloutAction `json:"action"`
	// Step is the 1-based strategy step an Advance moves to (default: the next one).
	// +optional
	Step *int32 `json:"step,omitempty"`
	// Cells overrides the step's cells for this advance; they must stay inside the placement and
	// include every cell the rollout already updated.
	// +optional
	Cells *StepCells `json:"cells,omitempty"`
	// Weight overrides the step's canary traffic percentage, 0 to 100.
	// +optional
	Weight *int32 `json:"weight,omitempty"`
	// Revision: for Undo, the revision to go back to (default: the one before the current
	// stable revision). For the other actions, when set, the step acts only while that revision
	// is the rollout's canary, so a step written for an older change cannot move a newer one.
	// +optional
	Revision string `json:"revision,omitempty"`
	// Reason is free text recorded in the event, e.g. who asked and why.
	// +optional
	Reason string `json:"reason,omitempty"`
}

// RolloutStepStatus says what came of the step.
type RolloutStepStatus struct {
	// +optional
	Phase RolloutStepPhase `json:"phase,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// CanaryRevision is the rollout's canary when the step acted.
	// +optional
	CanaryRevision string `json:"canaryRevision,omitempty"`
	// StepIndex is the strategy step an Advance or Promote moved to.
	// +optional
	StepIndex int32 `json:"stepIndex,omitempty"`
	// Conditions: Ready (True once done), Stalled (True when refused).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// RolloutStep moves a Rollout: advance, promote, pause, resume, abort or undo. It is the only way
// to act on a rollout; the kubectl cells plugin creates them.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=csrs,categories=cellsync
// +kubebuilder:printcolumn:name="Rollout",type=string,JSONPath=`.spec.rolloutRef.name`
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Step",type=integer,JSONPath=`.status.stepIndex`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RolloutStep struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RolloutStepSpec   `json:"spec,omitempty"`
	Status RolloutStepStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (s *RolloutStep) GetConditions() []metav1.Condition { return s.Status.Conditions }

// SetConditions sets the status conditions.
func (s *RolloutStep) SetConditions(c []metav1.Condition) { s.Status.Conditions = c }

// RolloutStepList is a list of RolloutSteps.
// +kubebuilder:object:root=true
type RolloutStepList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RolloutStep `json:"items"`
}

func init() {
	register(&RolloutStep{}, &RolloutStepList{})
}
