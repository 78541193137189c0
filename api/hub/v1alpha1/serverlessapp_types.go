package v1alpha1

import (
	"github.com/fluxcd/pkg/apis/meta"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ServerlessAppSpec is an app: a Knative-shaped revision template and where it runs.
type ServerlessAppSpec struct {
	// Template is the revision every placed cell runs.
	Template RevisionTemplate `json:"template"`

	// PlacementRef names the CellPlacement, in the app's namespace, that picks its cells.
	PlacementRef corev1.LocalObjectReference `json:"placementRef"`

	// TargetNamespace is the namespace in each cell the app is rendered into. It must be one of
	// the cell's namespaces; the default is the cell's first namespace.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	TargetNamespace string `json:"targetNamespace,omitempty"`

	// Domains are host name templates; each cell gets one DomainMapping per template.
	// Placeholders: {app}, {namespace}, {cell}, {cluster}.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	Domains []string `json:"domains,omitempty"`

	// Schedules send a CloudEvent to the app on a cron schedule, as Knative PingSources.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Schedules []Schedule `json:"schedules,omitempty"`

	// Strategy says how a new revision rolls out; the default renders it everywhere at once.
	// +optional
	Strategy *Strategy `json:"strategy,omitempty"`

	// Suspend stops rendering; cell branches keep what they have.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// RevisionTemplate is the part of a Knative revision people set.
type RevisionTemplate struct {
	// Image is the container image reference.
	// +kubebuilder:validation:MinLength=1
	Image string `json:"image"`

	// +optional
	Command []string `json:"command,omitempty"`
	// +optional
	Args []string `json:"args,omitempty"`
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`

	// Port is the container port that receives requests (Knative defaults it to 8080).
	// +optional
	Port int32 `json:"port,omitempty"`

	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// ContainerConcurrency is the hard limit of concurrent requests per instance; 0 is unlimited.
	// +optional
	ContainerConcurrency *int64 `json:"containerConcurrency,omitempty"`

	// TimeoutSeconds is the request timeout.
	// +optional
	TimeoutSeconds *int64 `json:"timeoutSeconds,omitempty"`

	// +optional
	Scaling *Scaling `json:"scaling,omitempty"`

	// ServiceAccountName runs the app's pods as this service account.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// Labels and Annotations are added to the revision's pods.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Scaling is the Knative autoscaler's settings for the app.
type Scaling struct {
	// MinScale is the fewest instances; 0 lets the app scale to zero.
	// +optional
	MinScale *int32 `json:"minScale,omitempty"`
	// MaxScale is the most instances; 0 is unbounded.
	// +optional
	MaxScale *int32 `json:"maxScale,omitempty"`
	// Target is the autoscaling target per instance for the metric.
	// +optional
	Target *int32 `json:"target,omitempty"`
	// Metric is concurrency, rps or cpu.
	// +kubebuilder:validation:Enum=concurrency;rps;cpu
	// +optional
	Metric string `json:"metric,omitempty"`
	// ScaleToZeroRetention keeps the last instance this long before scaling to zero.
	// +optional
	ScaleToZeroRetention *metav1.Duration `json:"scaleToZeroRetention,omitempty"`
}

// Schedule sends a CloudEvent to the app on a cron schedule.
type Schedule struct {
	// Name is unique within the app.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=40
	Name string `json:"name"`
	// Schedule is a cron expression.
	// +kubebuilder:validation:MinLength=1
	Schedule string `json:"schedule"`
	// TimeZone is an IANA time zone name.
	// +optional
	TimeZone string `json:"timeZone,omitempty"`
	// Data is the event payload.
	// +optional
	Data string `json:"data,omitempty"`
	// ContentType is the payload's media type.
	// +optional
	ContentType string `json:"contentType,omitempty"`
}

// ServerlessAppStatus is what the hub last rendered for the app.
type ServerlessAppStatus struct {
	// ObservedGeneration is the last generation rendered.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Revision names the rendered revision template: <app>-<content hash>.
	// +optional
	Revision string `json:"revision,omitempty"`

	// CellCount is how many cells the app is rendered into.
	// +optional
	CellCount int `json:"cellCount,omitempty"`

	// Cells lists the cells the app is rendered into, sorted, at most 256.
	// +optional
	// +listType=set
	Cells []string `json:"cells,omitempty"`

	// ReadyCells is how many of the app's cells report it ready with a fresh heartbeat.
	// +optional
	ReadyCells int `json:"readyCells,omitempty"`

	// UpdatedCells is how many of the app's cells run the revision rendered for them, and
	// RolledOutCells how many of those run it ready: counted over every placed cell, where
	// cellStatuses lists at most 256.
	// +optional
	UpdatedCells int `json:"updatedCells,omitempty"`
	// +optional
	RolledOutCells int `json:"rolledOutCells,omitempty"`

	// CellStatuses is the app's state in each cell, from the agents' reports; at most 256.
	// +optional
	// +listType=map
	// +listMapKey=cell
	CellStatuses []CellAppStatus `json:"cellStatuses,omitempty"`

	// SourceCommit is the main-branch commit the rendered spec came from, when synced from Git.
	// +optional
	SourceCommit string `json:"sourceCommit,omitempty"`

	// Conditions: Ready, Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// LastHandledReconcileAt echoes the reconcile.fluxcd.io/requestedAt annotation handled last.
	meta.ReconcileRequestStatus `json:",inline"`
}

// CellAppStatus is an app's state in one cell.
type CellAppStatus struct {
	Cell string `json:"cell"`
	// Ready is true when the cell's agent reports the app ready, with a fresh heartbeat.
	Ready bool `json:"ready"`
	// Revision is the latest ready revision the cell reports.
	// +optional
	Revision string `json:"revision,omitempty"`
	// Traffic is the split the cell's Knative Service reports, as revision=percent pairs.
	// +optional
	Traffic string `json:"traffic,omitempty"`
	// DesiredRevision is the revision the hub rendered for the cell (overrides can make it
	// differ between cells).
	// +optional
	DesiredRevision string `json:"desiredRevision,omitempty"`
	// Failed is true when the cell's agent reports the app failed there (not merely on its
	// way): the app is Degraded until a new revision or a fix lands.
	// +optional
	Failed bool `json:"failed,omitempty"`
	// Stale is true when the cell has sent no fresh heartbeat: what it last said may be old.
	// +optional
	Stale bool `json:"stale,omitempty"`
	// Message says why the app is not ready there.
	// +optional
	Message string `json:"message,omitempty"`
}

// ServerlessApp is a serverless app the hub renders into every cell it is placed on.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sapp,categories=cellsync
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.template.image`,priority=1
// +kubebuilder:printcolumn:name="Placement",type=string,JSONPath=`.spec.placementRef.name`
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.status.revision`
// +kubebuilder:printcolumn:name="Cells",type=integer,JSONPath=`.status.cellCount`
// +kubebuilder:printcolumn:name="Ready-Cells",type=integer,JSONPath=`.status.readyCells`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ServerlessApp struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ServerlessAppSpec   `json:"spec,omitempty"`
	Status ServerlessAppStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (a *ServerlessApp) GetConditions() []metav1.Condition { return a.Status.Conditions }

// SetConditions sets the status conditions.
func (a *ServerlessApp) SetConditions(conditions []metav1.Condition) {
	a.Status.Conditions = conditions
}

// ServerlessAppList is a list of ServerlessApps.
// +kubebuilder:object:root=true
type ServerlessAppList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ServerlessApp `json:"items"`
}

func init() {
	register(&ServerlessApp{}, &ServerlessAppList{})
}

// IsCanary says whether the app rolls out through canary steps (the Rollout controller then
// writes its files in the placed cells' branches).
func (a *ServerlessApp) IsCanary() bool {
	return a.Spec.Strategy != nil && a.Spec.Strategy.Type == StrategyCanary && a.Spec.Strategy.Canary != nil
}
