package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
)

// StrategyType is how a new revision reaches the cells.
// +kubebuilder:validation:Enum=AllAtOnce;Canary
type StrategyType string

const (
	// StrategyAllAtOnce renders the new revision into every placed cell at once.
	StrategyAllAtOnce StrategyType = "AllAtOnce"
	// StrategyCanary walks spec.strategy.canary.steps.
	StrategyCanary StrategyType = "Canary"
)

// Strategy says how a new revision rolls out.
type Strategy struct {
	// +kubebuilder:default=AllAtOnce
	// +optional
	Type StrategyType `json:"type,omitempty"`
	// Canary is required with type Canary.
	// +optional
	Canary *CanaryStrategy `json:"canary,omitempty"`
}

// CanaryStrategy is a list of steps through cells and traffic weights.
type CanaryStrategy struct {
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	Steps []CanaryStep `json:"steps"`
	// StaleCellPolicy says what a step does with a masked cell without a fresh heartbeat.
	// +kubebuilder:validation:Enum=Wait;Skip;Fail
	// +kubebuilder:default=Wait
	// +optional
	StaleCellPolicy string `json:"staleCellPolicy,omitempty"`
	// FailureThreshold is how long a canary may report not Ready before the rollout aborts.
	// +kubebuilder:default="5m"
	// +optional
	FailureThreshold *metav1.Duration `json:"failureThreshold,omitempty"`
	// Analysis is measured at every step that names none of its own: each masked cell must
	// pass it for the step's commit before the step passes.
	// +optional
	Analysis *StepAnalysis `json:"analysis,omitempty"`
}

// CanaryStep is one step: which cells get the canary, and its traffic share inside them.
type CanaryStep struct {
	// Cells picks the step's cells out of the placement.
	Cells StepCells `json:"cells"`
	// Weight is the canary's traffic percentage inside each picked cell.
	Weight int32 `json:"weight"`
	// Pause holds the rollout after the step is healthy: for a duration, or until a RolloutStep
	// approves. Without it the next step follows as soon as this one is healthy.
	// +optional
	Pause *StepPause `json:"pause,omitempty"`
	// Analysis, when set, replaces the strategy's analysis for this step.
	// +optional
	Analysis *StepAnalysis `json:"analysis,omitempty"`
}

// StepCells picks cells: by name, by selector, by count or by percent of the placement.
type StepCells struct {
	// +optional
	// +listType=set
	Names []string `json:"names,omitempty"`
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
	// +optional
	Count *int32 `json:"count,omitempty"`
	// +optional
	Percent *int32 `json:"percent,omitempty"`
}

// StepPause holds a rollout after a step.
type StepPause struct {
	// Duration is a bake time.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`
	// UntilApproved waits for a RolloutStep with action Advance or Promote.
	// +optional
	UntilApproved bool `json:"untilApproved,omitempty"`
}

// RolloutPhase is where a rollout stands.
// +kubebuilder:validation:Enum=Progressing;Paused;Completed;Aborted;Failed
type RolloutPhase string

// Rollout phases.
const (
	PhaseProgressing RolloutPhase = "Progressing"
	PhasePaused      RolloutPhase = "Paused"
	PhaseCompleted   RolloutPhase = "Completed"
	PhaseAborted     RolloutPhase = "Aborted"
	PhaseFailed      RolloutPhase = "Failed"
)

// RolloutSpec names the app; the hub creates one Rollout per ServerlessApp, owned by it.
type RolloutSpec struct {
	AppRef corev1.LocalObjectReference `json:"appRef"`
}

// RolloutCell is one cell's part in the rollout.
type RolloutCell struct {
	Cell string `json:"cell"`
	// Updated is true when the cell runs the rollout's current revision (its report's app entry
	// names it as the latest ready revision).
	Updated bool `json:"updated"`
	// Ready is true when the cell reports the app ready with a fresh heartbeat.
	Ready bool `json:"ready"`
	// Revision is the latest ready revision the cell reports.
	// +optional
	Revision string `json:"revision,omitempty"`
	// AppliedCommit is the cell branch commit the cell reports applied.
	// +optional
	AppliedCommit string `json:"appliedCommit,omitempty"`
	// Canary is true when the current step has the cell run the canary revision.
	// +optional
	Canary bool `json:"canary,omitempty"`
	// Weight is the canary's traffic share in the cell.
	// +optional
	Weight int32 `json:"weight,omitempty"`
	// StableRevision is the revision the cell ran before the rollout touched it.
	// +optional
	StableRevision string `json:"stableRevision,omitempty"`
	// LastKnownGood is the branch commit before the rollout first touched the cell; an abort
	// puts its tree back. "none" when the branch did not exist.
	// +optional
	LastKnownGood string `json:"lastKnownGood,omitempty"`
	// ExpectedCommit is the branch commit the current step waits for the cell to apply, and
	// ExpectedSince when the hub first expected it.
	// +optional
	ExpectedCommit string `json:"expectedCommit,omitempty"`
	// +optional
	ExpectedSince *metav1.Time `json:"expectedSince,omitempty"`
	// Skipped is true when a stale cell was passed over by staleCellPolicy Skip.
	// +optional
	Skipped bool `json:"skipped,omitempty"`
	// Message says what the step waits for in this cell.
	// +optional
	Message string `json:"message,omitempty"`
	// Analysis is the cell's analysis of the current step, as its agent reports it.
	// +optional
	Analysis *CellAnalysis `json:"analysis,omitempty"`
}

// CellTableRef is a cell table kept in Git.
type CellTableRef struct {
	// Branch of the hub's repository that holds the table, rollouts/<namespace>/<name>.
	Branch string `json:"branch"`
	// Commit is the table's commit: the hub reads the table at this commit, so that it always
	// goes with the status beside it.
	Commit string `json:"commit"`
	// Cells is how many cells the table holds.
	Cells int32 `json:"cells"`
}

// AnalysisPhase is where an analysis, or one metric of it, stands.
type AnalysisPhase string

// Analysis phases: the agents' report phases.
const (
	AnalysisRunning      AnalysisPhase = agentv1alpha1.AnalysisRunning
	AnalysisSuccessful   AnalysisPhase = agentv1alpha1.AnalysisSuccessful
	AnalysisFailed       AnalysisPhase = agentv1alpha1.AnalysisFailed
	AnalysisInconclusive AnalysisPhase = agentv1alpha1.AnalysisInconclusive
)

// CellAnalysis is one cell's analysis of a step.
type CellAnalysis struct {
	// ID names the rendered analysis (the step and what it measures).
	ID string `json:"id"`
	// +optional
	Phase AnalysisPhase `json:"phase,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=10
	Metrics []MetricResult `json:"metrics,omitempty"`
}

// MetricResult is one metric's standing in a cell, with its last measured value.
type MetricResult struct {
	Name string `json:"name"`
	// +optional
	Phase AnalysisPhase `json:"phase,omitempty"`
	// Value is the last measured value, as text.
	// +optional
	Value string `json:"value,omitempty"`
	// Successful, Failed and Inconclusive count the measurements so far.
	// +optional
	Successful int32 `json:"successful,omitempty"`
	// +optional
	Failed int32 `json:"failed,omitempty"`
	// +optional
	Inconclusive int32 `json:"inconclusive,omitempty"`
	// Message says what the last measurement found.
	// +optional
	Message string `json:"message,omitempty"`
}

// RevisionRecord is a revision that completed a rollout, kept for undo.
type RevisionRecord struct {
	Revision string `json:"revision"`
	// Template is the app template that rendered the revision.
	Template    RevisionTemplate `json:"template"`
	CompletedAt metav1.Time      `json:"completedAt"`
}

// RolloutStatus is the live progress of the app's current revision.
type RolloutStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Phase RolloutPhase `json:"phase,omitempty"`
	// Step and Steps: the current step, 1-based, of how many; StepDisplay is "n/m".
	// +optional
	Step int32 `json:"step,omitempty"`
	// +optional
	Steps int32 `json:"steps,omitempty"`
	// +optional
	StepDisplay string `json:"stepDisplay,omitempty"`
	// CanaryWeight is the canary's traffic share in the current step's cells (0 when none).
	// +optional
	CanaryWeight int32 `json:"canaryWeight"`
	// StableRevision is the revision that completed last; CanaryRevision the one rolling out.
	// +optional
	StableRevision string `json:"stableRevision,omitempty"`
	// +optional
	CanaryRevision string `json:"canaryRevision,omitempty"`
	// Cell counts and "updated/ready/total".
	// +optional
	UpdatedCells int32 `json:"updatedCells"`
	// +optional
	ReadyCells int32 `json:"readyCells"`
	// +optional
	TotalCells int32 `json:"totalCells"`
	// +optional
	CellsDisplay string `json:"cellsDisplay,omitempty"`
	// Analysis is where the current step's analysis stands over its cells: Running,
	// Successful, Failed or Inconclusive ("" when the step has none).
	// +optional
	Analysis AnalysisPhase `json:"analysis,omitempty"`
	// AnalysisAttempt counts the Resumes of an inconclusive analysis in this rollout: each one
	// renders the step's analysis again under a new id, and the cells measure it again.
	// +optional
	AnalysisAttempt int32 `json:"analysisAttempt,omitempty"`
	// Paused is true after a Pause RolloutStep, until a Resume, Advance or Promote.
	// +optional
	Paused bool `json:"paused,omitempty"`
	// StepCompletedAt is when every masked cell passed the current step's gate.
	// +optional
	StepCompletedAt *metav1.Time `json:"stepCompletedAt,omitempty"`
	// CurrentStep names the RolloutStep that moved the rollout to its current step.
	// +optional
	CurrentStep string `json:"currentStep,omitempty"`
	// SkippedCells are the stale cells the current step passed over (staleCellPolicy Skip).
	// +optional
	// +listType=set
	SkippedCells []string `json:"skippedCells,omitempty"`
	// SupersededRevision is the canary a spec change replaced before it completed.
	// +optional
	SupersededRevision string `json:"supersededRevision,omitempty"`
	// Message says where the rollout stands, or why it aborted.
	// +optional
	Message string `json:"message,omitempty"`
	// History lists the last revisions that completed, newest last, at most 10, for undo.
	// +optional
	History []RevisionRecord `json:"history,omitempty"`
	// Cells is each cell's part, sorted, at most 1000. A canary over more cells keeps what it
	// remembers of every cell (last-known-good commits and the rest) in Git: see CellTable.
	// +optional
	// +listType=map
	// +listMapKey=cell
	Cells []RolloutCell `json:"cells,omitempty"`
	// CellTable, when set, is where a canary over more cells than the status lists keeps its
	// cell table: a commit of the hub's repository, on the rollout's own branch.
	// +optional
	CellTable *CellTableRef `json:"cellTable,omitempty"`
	// Conditions: Ready, Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Rollout shows, and is moved by RolloutSteps through, the rollout of one ServerlessApp's
// revision. On clusters that also run Argo Rollouts, use the full name rollouts.hub.cellsync.io.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=csro,categories=cellsync
// +kubebuilder:printcolumn:name="App",type=string,JSONPath=`.spec.appRef.name`
// +kubebuilder:printcolumn:name="Step",type=string,JSONPath=`.status.stepDisplay`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Canary%",type=integer,JSONPath=`.status.canaryWeight`
// +kubebuilder:printcolumn:name="Cells",type=string,JSONPath=`.status.cellsDisplay`
// +kubebuilder:printcolumn:name="Analysis",type=string,JSONPath=`.status.analysis`
// +kubebuilder:printcolumn:name="Stable",type=string,JSONPath=`.status.stableRevision`
// +kubebuilder:printcolumn:name="Canary",type=string,JSONPath=`.status.canaryRevision`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Rollout struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RolloutSpec   `json:"spec,omitempty"`
	Status RolloutStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (r *Rollout) GetConditions() []metav1.Condition { return r.Status.Conditions }

// SetConditions sets the status conditions.
func (r *Rollout) SetConditions(c []metav1.Condition) { r.Status.Conditions = c }

// RolloutList is a list of Rollouts.
// +kubebuilder:object:root=true
type RolloutList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Rollout `json:"items"`
}

func init() {
	register(&Rollout{}, &RolloutList{})
}
