package v1alpha1

import (
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Reasons for CellSync conditions and events, next to Flux's generic ones in fluxcd/pkg/apis/meta.
const (
	ReasonGitOperationFailed = "GitOperationFailed"
	ReasonVerificationFailed = "VerificationFailed"
	ReasonPolicyViolation    = "PolicyViolation"
	ReasonDryRunFailed       = "DryRunFailed"
	ReasonApplyFailed        = "ApplyFailed"
	ReasonInvalidBranch      = "InvalidBranch"
	ReasonLimitExceeded      = "LimitExceeded"
	ReasonGitAuthFailed      = "GitAuthenticationFailed"
	ReasonReportKeyInvalid   = "ReportKeyInvalid"
)

// Labels and field manager the agent puts on what it applies.
const (
	FieldManager    = "cellsync-agent"
	OwnerGroup      = "agent.cellsync.io"
	StatusRefPrefix = "status/"
)

// CellSyncSpec says which cell branch to run here and under which rules.
type CellSyncSpec struct {
	// Cell is the cell this agent serves; its report goes to status/<cell>.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Cell string `json:"cell"`

	// URL of the GitOps repository.
	// +kubebuilder:validation:Pattern=`^(http|https|ssh|file)://.*$|^[^@/]+@[^:]+:.*$`
	URL string `json:"url"`

	// StatusURL is the repository the agent pushes its reports to (status/<cell>), when not
	// url; the same credentials are used. A push pays for every ref of its repository, so a
	// large fleet keeps status refs in small repositories sharded by cell. The hub must be told
	// the same (the Cell's spec.statusURL); kubectl cells join --status-url sets both.
	// +kubebuilder:validation:Pattern=`^(http|https|ssh|file)://.*$|^[^@/]+@[^:]+:.*$`
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	StatusURL string `json:"statusURL,omitempty"`

	// Branch to apply; default cells/<cell>.
	// +optional
	Branch string `json:"branch,omitempty"`

	// SecretRef names a Secret in this namespace with Git credentials (username/password,
	// bearerToken, or identity/known_hosts).
	// +optional
	SecretRef *meta.LocalObjectReference `json:"secretRef,omitempty"`

	// Interval between ref listings, and between re-applies that heal drift.
	// +kubebuilder:default="1m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +optional
	Interval metav1.Duration `json:"interval,omitempty"`

	// Timeout for applied objects to become healthy.
	// +kubebuilder:default="2m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// HeartbeatInterval is how often the status report is rewritten when nothing changed.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +optional
	HeartbeatInterval *metav1.Duration `json:"heartbeatInterval,omitempty"`

	// Verify, when set, applies only commits signed by one of the trusted keys.
	// +optional
	Verify *Verification `json:"verify,omitempty"`

	// Suspend stops fetching and applying; what is applied stays.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// Prune deletes objects that a new commit no longer has.
	// +kubebuilder:default=true
	// +optional
	Prune bool `json:"prune,omitempty"`

	// ServiceAccountName, in this namespace, is impersonated for every apply, prune and health
	// read. When empty, the agent's --default-service-account is used: the agent never applies
	// with its own identity.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// ReportSigning, when set, signs every status report with the OpenPGP private key in the
	// Secret (key git.asc, optional passphrase); the hub trusts a cell's reports only when
	// they are signed by a key in its Cell's spec.reportKeys.
	// +optional
	ReportSigning *ReportSigning `json:"reportSigning,omitempty"`

	// Policy limits what the branch may create.
	Policy Policy `json:"policy"`

	// Analysis says where the agent measures the canary analyses the hub renders into the
	// branch. It belongs to the cell's owner: a branch cannot point the agent at an address.
	// Without it, a Prometheus metric is inconclusive.
	// +optional
	Analysis *AnalysisSource `json:"analysis,omitempty"`
}

// AnalysisSource is where a cell's metrics are.
type AnalysisSource struct {
	// Prometheus is the cell's own Prometheus.
	// +optional
	Prometheus *PrometheusSource `json:"prometheus,omitempty"`
}

// PrometheusSource is a Prometheus HTTP API.
type PrometheusSource struct {
	// Address is the base URL of the Prometheus HTTP API, for example
	// http://prometheus.monitoring.svc:9090.
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	// +kubebuilder:validation:MaxLength=2048
	Address string `json:"address"`
}

// Verification lists the keys a commit must be signed with.
type Verification struct {
	// SecretRef names a Secret whose every value is an armored OpenPGP public key.
	SecretRef meta.LocalObjectReference `json:"secretRef"`
}

// ReportSigning names the Secret with the cell's report-signing key.
type ReportSigning struct {
	// SecretRef names a Secret in this namespace holding an armored OpenPGP private key under
	// git.asc (and its passphrase under passphrase, if any).
	SecretRef meta.LocalObjectReference `json:"secretRef"`
}

// Policy limits what a cell branch may create in this cluster. It belongs to the member
// cluster's owner: nothing in a branch can widen it.
type Policy struct {
	// Namespaces the cell owns; every namespaced object must be in one of them.
	// +kubebuilder:validation:MinItems=1
	// +listType=set
	Namespaces []string `json:"namespaces"`

	// AllowedKinds, when set, is the only kinds allowed, group-qualified as kubectl writes
	// them: Kind for the core group ("Service" is core/v1's only), Kind.group otherwise
	// ("Service.serving.knative.dev").
	// +optional
	// +listType=set
	// +kubebuilder:validation:items:Pattern=`^[A-Z][A-Za-z0-9]*(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	AllowedKinds []string `json:"allowedKinds,omitempty"`

	// AllowClusterScoped lets the branch create cluster-scoped objects (refused by default).
	// +optional
	AllowClusterScoped bool `json:"allowClusterScoped,omitempty"`

	// AllowRBAC lets the branch create Roles, RoleBindings and service-account token Secrets
	// (and, with allowClusterScoped, ClusterRoles and ClusterRoleBindings). Refused by default.
	// The applying ServiceAccount still needs the rights it grants.
	// +optional
	AllowRBAC bool `json:"allowRBAC,omitempty"`

	// PodSecurity is the Pod Security Standard every Pod and pod template of the branch must
	// meet (Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, ReplicaSets, Knative
	// Services, Configurations and Revisions), checked by the agent before anything is applied.
	// +kubebuilder:validation:Enum=privileged;baseline;restricted
	// +kubebuilder:default=baseline
	// +optional
	PodSecurity string `json:"podSecurity,omitempty"`
}

// ResourceInventory lists what the agent applied, as Flux's Kustomization does.
type ResourceInventory struct {
	// +required
	Entries []ResourceRef `json:"entries"`
}

// ResourceRef is one applied object: ID is <namespace>_<name>_<group>_<kind>, V its version.
type ResourceRef struct {
	ID string `json:"id"`
	V  string `json:"v"`
}

// CellSyncStatus follows Flux's Kustomization status.
type CellSyncStatus struct {
	meta.ReconcileRequestStatus `json:",inline"`

	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, Reconciling, Stalled, Healthy.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// LastAppliedRevision is the last commit applied successfully, as <branch>@sha1:<commit>.
	// +optional
	LastAppliedRevision string `json:"lastAppliedRevision,omitempty"`

	// LastAttemptedRevision is the last commit an apply was tried for.
	// +optional
	LastAttemptedRevision string `json:"lastAttemptedRevision,omitempty"`

	// Inventory of the applied objects.
	// +optional
	Inventory *ResourceInventory `json:"inventory,omitempty"`

	// LastReportTime is when the status report was last pushed.
	// +optional
	LastReportTime *metav1.Time `json:"lastReportTime,omitempty"`
}

// CellSync runs one cell branch in this cluster.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cs,categories=cellsync
// +kubebuilder:printcolumn:name="Cell",type=string,JSONPath=`.spec.cell`
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.status.lastAppliedRevision`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CellSync struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CellSyncSpec   `json:"spec,omitempty"`
	Status CellSyncStatus `json:"status,omitempty"`
}

// BranchName is spec.branch, or cells/<cell>.
func (c *CellSync) BranchName() string {
	if c.Spec.Branch != "" {
		return c.Spec.Branch
	}
	return "cells/" + c.Spec.Cell
}

// StatusBranch is where the agent reports.
func (c *CellSync) StatusBranch() string { return StatusRefPrefix + c.Spec.Cell }

// StatusURLOrDefault is the repository reports go to: spec.statusURL, or spec.url.
func (c *CellSync) StatusURLOrDefault() string {
	if c.Spec.StatusURL != "" {
		return c.Spec.StatusURL
	}
	return c.Spec.URL
}

// IntervalOrDefault is spec.interval, or one minute.
func (c *CellSync) IntervalOrDefault() time.Duration {
	if c.Spec.Interval.Duration <= 0 {
		return time.Minute
	}
	return c.Spec.Interval.Duration
}

// TimeoutOrDefault is spec.timeout, or two minutes.
func (c *CellSync) TimeoutOrDefault() time.Duration {
	if c.Spec.Timeout == nil || c.Spec.Timeout.Duration <= 0 {
		return 2 * time.Minute
	}
	return c.Spec.Timeout.Duration
}

// HeartbeatOrDefault is spec.heartbeatInterval, or 30 seconds.
func (c *CellSync) HeartbeatOrDefault() time.Duration {
	if c.Spec.HeartbeatInterval == nil || c.Spec.HeartbeatInterval.Duration <= 0 {
		return 30 * time.Second
	}
	return c.Spec.HeartbeatInterval.Duration
}

// GetConditions returns the status conditions.
func (c *CellSync) GetConditions() []metav1.Condition { return c.Status.Conditions }

// SetConditions sets the status conditions.
func (c *CellSync) SetConditions(conditions []metav1.Condition) { c.Status.Conditions = conditions }

// CellSyncList is a list of CellSyncs.
// +kubebuilder:object:root=true
type CellSyncList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CellSync `json:"items"`
}
