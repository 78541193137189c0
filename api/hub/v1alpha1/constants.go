package v1alpha1

// Label keys a Cell carries to describe where it runs and who owns it. Placements select on them.
const (
	LabelRegion    = "cellsync.io/region"
	LabelZone      = "cellsync.io/zone"
	LabelEnv       = "cellsync.io/env"
	LabelTenant    = "cellsync.io/tenant"
	LabelWorkspace = "cellsync.io/workspace"
)

// Annotations the hub reads on its objects.
const (
	// SourceCommitAnnotation records the main-branch commit an object was synced from.
	SourceCommitAnnotation = "cellsync.io/source-commit"
	// SourceDigestAnnotation is a digest of the object as the source last applied it; the
	// source commit annotation only moves when the object changes.
	SourceDigestAnnotation = "cellsync.io/source-digest"
)

// Finalizer keeps a ServerlessApp until its files are gone from every cell branch.
const Finalizer = "hub.cellsync.io/finalizer"

// Condition types beyond Flux's Ready, Reconciling and Stalled.
const (
	// StaleCondition is True when a cell's agent has not reported within the threshold.
	StaleCondition = "Stale"
	// ReportTrustedCondition says whether the cell's reports are signed by a key the Cell
	// lists (spec.reportKeys); False while the latest report on its status ref is not.
	ReportTrustedCondition = "ReportTrusted"
)

// Reasons for conditions and events. Event reasons equal condition reasons.
const (
	ReasonRendered          = "Rendered"
	ReasonResolved          = "Resolved"
	ReasonAccepted          = "Accepted"
	ReasonProgressing       = "Progressing"
	ReasonInvalidSpec       = "InvalidSpec"
	ReasonInvalidImage      = "InvalidImage"
	ReasonPlacementNotFound = "PlacementNotFound"
	ReasonPlacementFailed   = "PlacementFailed"
	ReasonTenantViolation   = "TenantViolation"
	ReasonNoCells           = "NoCellsResolved"
	ReasonWaitingForCells   = "WaitingForCells" // rendered; not yet ready in every cell
	ReasonAppFailed         = "AppFailed"       // a cell reports the app failed
	ReasonOverrideFailed    = "OverrideFailed"
	ReasonRenderFailed      = "RenderFailed"
	ReasonGitAuthFailed     = "GitAuthenticationFailed"
	ReasonGitUnavailable    = "GitUnavailable"
	ReasonGitPushFailed     = "GitPushFailed"
	ReasonSigningFailed     = "SigningFailed"
	ReasonConflict          = "Conflict"
	ReasonSuspended         = "Suspended"
	ReasonDeleting          = "Deleting"
	ReasonNoReport          = "NoReport"
	ReasonReportVerified    = "ReportVerified"
	ReasonUnsignedReport    = "UnsignedReport"
	ReasonUntrustedReport   = "UntrustedReportSigner"
	ReasonStale             = "Stale"
	ReasonHeartbeat         = "HeartbeatFresh"
	ReasonAgentReady        = "AgentReady"
	ReasonAgentNotReady     = "AgentNotReady"
	ReasonAgentProgressing  = "AgentProgressing" // not ready yet, still converging: Reconciling, not failed
	ReasonRolledOut         = "RolledOut"
	ReasonInvalidStrategy   = "InvalidStrategy"
	ReasonStepApplied       = "StepApplied"
	ReasonStepComplete      = "StepComplete"
	ReasonAwaitingApproval  = "AwaitingApproval"
	ReasonPaused            = "Paused"
	// ReasonStateLost: the rollout has no state on this hub (its etcd was lost) while the cell
	// branches hold a canary in flight; it holds until a person decides.
	ReasonStateLost = "StateLost"
	// ReasonCellTableInvalid: the cell table a rollout keeps in Git (above 1000 cells) is not
	// one the hub wrote; the rollout holds until it is put right.
	ReasonCellTableInvalid = "CellTableInvalid"
	ReasonAborted          = "Aborted"
	// ReasonAnalysisInconclusive: a cell's analysis could not decide (its Prometheus did not
	// answer, a query returned no data) beyond its limit; the rollout pauses.
	ReasonAnalysisInconclusive = "AnalysisInconclusive"
	// ReasonAnalysisTemplateNotFound: a step names an AnalysisTemplate that does not exist.
	ReasonAnalysisTemplateNotFound = "AnalysisTemplateNotFound"
	// ReasonInvalidAnalysis: an AnalysisTemplate cannot be measured as written.
	ReasonInvalidAnalysis = "InvalidAnalysis"
	ReasonSuperseded      = "Superseded"
	ReasonRolloutNotFound = "RolloutNotFound"
	ReasonInvalidStep     = "InvalidStep"
	ReasonStepConflict    = "ConflictingStep"
	ReasonStepDone        = "StepSucceeded"
	ReasonUndoFailed      = "UndoRefused"
	ReasonSynced          = "Synced"
	ReasonInvalidSource   = "InvalidSource"
	ReasonSourceForbidden = "SourceForbidden"
	ReasonBranchNotFound  = "BranchNotFound"
	// ReasonLimitExceeded: a Git ref holds more than the hub fetches (a report, a source
	// commit); nothing of it was read.
	ReasonLimitExceeded = "LimitExceeded"
)

// Labels on hub-made objects.
const (
	// LabelRollout names a RolloutStep's rollout, for listing a rollout's steps.
	LabelRollout = "hub.cellsync.io/rollout"
	// LabelCreatedBy says who made a RolloutStep: "hub" for automatic advances.
	LabelCreatedBy = "hub.cellsync.io/created-by"
)

// HeartbeatLeaseLabel is on each cell's heartbeat Lease in the hub's namespace (Lease
// cell-<cell>, renewed when the hub sees a new heartbeat), and holds the cell's name.
const HeartbeatLeaseLabel = "hub.cellsync.io/cell"

// MaxAnalysisMetricsShown bounds the metrics a Rollout shows per cell.
const MaxAnalysisMetricsShown = 10
