package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StatusReportFile is the file that holds the report at the root of status/<cell>.
const StatusReportFile = "status.yaml"

// StatusReportKind is the kind written in every report.
const StatusReportKind = "StatusReport"

// StatusReport is what an agent tells the hub about one cell, through Git only: one orphan
// commit on status/<cell> holding status.yaml, rewritten when the report changes or the
// heartbeat is due. It is not an API object; its format is the contract between agent and hub.
type StatusReport struct {
	// APIVersion is agent.cellsync.io/v1alpha1 and Kind is StatusReport.
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`

	// Cell is the reporting cell.
	Cell string `json:"cell"`
	// AgentVersion is the reporting agent's version.
	AgentVersion string `json:"agentVersion"`
	// HeartbeatTime is when the report was written.
	HeartbeatTime metav1.Time `json:"heartbeatTime"`

	// AppliedCommit is the cell branch commit applied successfully last.
	// +optional
	AppliedCommit string `json:"appliedCommit,omitempty"`
	// AttemptedCommit is the cell branch commit tried last.
	// +optional
	AttemptedCommit string `json:"attemptedCommit,omitempty"`

	// Refusal is the last commit the agent refused and why (policy, limits, verification), so
	// the hub can show which cell refused what; the signed report makes it unforgeable.
	// +optional
	Refusal *Refusal `json:"refusal,omitempty"`

	// Conditions are the CellSync's conditions.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Apps is the health of every workload the cell runs.
	// +optional
	Apps []AppReport `json:"apps,omitempty"`

	// Analyses are the canary analyses of the applied commit, as measured in the cell.
	// +optional
	Analyses []AnalysisReport `json:"analyses,omitempty"`
}

// AppReport is one workload's health in a cell.
type AppReport struct {
	// App and AppNamespace name the hub ServerlessApp it was rendered from, when known.
	// +optional
	App string `json:"app,omitempty"`
	// +optional
	AppNamespace string `json:"appNamespace,omitempty"`

	// Namespace, Name and Kind identify the workload in the member cluster.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`

	// Ready is true when the workload is healthy.
	Ready bool `json:"ready"`
	// Failed is true when the workload reports a failure (kstatus Failed, or a Knative Service
	// Ready=False), not merely slowness. Agents before v0.3 do not report it.
	// +optional
	Failed bool `json:"failed,omitempty"`
	// Reason and Message explain the state (Knative's, for Knative Services).
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`

	// LatestReadyRevision and LatestCreatedRevision, for Knative Services.
	// +optional
	LatestReadyRevision string `json:"latestReadyRevision,omitempty"`
	// +optional
	LatestCreatedRevision string `json:"latestCreatedRevision,omitempty"`
	// Traffic is the traffic split the Service reports.
	// +optional
	Traffic []TrafficReport `json:"traffic,omitempty"`
}

// TrafficReport is one traffic target a Knative Service reports.
type TrafficReport struct {
	RevisionName string `json:"revisionName"`
	Percent      int64  `json:"percent"`
	// +optional
	Tag string `json:"tag,omitempty"`
}

// Refusal is a commit the agent would not apply; the last good commit stays applied.
type Refusal struct {
	Commit  string `json:"commit"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}
