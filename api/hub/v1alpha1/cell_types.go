package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CellRuntime is what runs a cell's apps.
// +kubebuilder:validation:Enum=knative;kubernetes
type CellRuntime string

const (
	// RuntimeKnative renders Knative Services.
	RuntimeKnative CellRuntime = "knative"
	// RuntimeKubernetes renders a Deployment, a Service and a HorizontalPodAutoscaler.
	RuntimeKubernetes CellRuntime = "kubernetes"
)

// CellBranchPrefix is the prefix of every cell branch.
const CellBranchPrefix = "cells/"

// CellSpec describes one deployment unit: the cluster that hosts it and the namespaces it owns.
type CellSpec struct {
	// Cluster names the member cluster that hosts the cell. One cluster may host many cells.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Cluster string `json:"cluster"`

	// Namespaces the cell owns in its cluster. The first is where apps go unless they name
	// another one of these.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	Namespaces []string `json:"namespaces"`

	// Runtime selects what the hub renders for this cell.
	// +kubebuilder:default=knative
	// +optional
	Runtime CellRuntime `json:"runtime,omitempty"`

	// Branch overrides the cell branch name; the default is cells/<name>.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._/-]*$`
	// +kubebuilder:validation:MaxLength=200
	// +optional
	Branch string `json:"branch,omitempty"`

	// ReportKeys are the armored OpenPGP public keys of the cell's agent. When set, the hub
	// trusts a report on status/<cell> only when its commit is signed by one of them; any other
	// report is ignored and shown on the Cell (ReportTrusted=False). List two keys to rotate.
	// +kubebuilder:validation:MaxItems=4
	// +kubebuilder:validation:items:MaxLength=16384
	// +optional
	ReportKeys []string `json:"reportKeys,omitempty"`

	// StatusURL is the repository the cell's agent pushes its reports to (its CellSync's
	// spec.statusURL), when not the hub's own. A report push pays for every ref of the
	// repository it goes to, so a large fleet keeps its status refs in small repositories of
	// their own, sharded by cell. The hub reads status/<cell> for this cell only there, with its
	// Git credentials.
	// +kubebuilder:validation:Pattern=`^(http|https|ssh|file)://.*$|^[^@/]+@[^:]+:.*$`
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	StatusURL string `json:"statusURL,omitempty"`
}

// CellStatus is what the hub knows of a cell.
type CellStatus struct {
	// ObservedGeneration is the last generation the hub acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Branch is the cell branch the hub writes.
	// +optional
	Branch string `json:"branch,omitempty"`

	// LastAppliedCommit is the cell branch commit the agent last applied.
	// +optional
	LastAppliedCommit string `json:"lastAppliedCommit,omitempty"`

	// Conditions: Ready, Stale.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Cell is a deployment unit in a member cluster that the hub renders a branch for.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cell,categories=cellsync
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Runtime",type=string,JSONPath=`.spec.runtime`
// +kubebuilder:printcolumn:name="Branch",type=string,JSONPath=`.status.branch`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Since",type=date,JSONPath=`.status.conditions[?(@.type=="Ready")].lastTransitionTime`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Cell struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CellSpec   `json:"spec,omitempty"`
	Status CellStatus `json:"status,omitempty"`
}

// BranchName is the cell branch: spec.branch, or cells/<name>.
func (c *Cell) BranchName() string {
	if c.Spec.Branch != "" {
		return c.Spec.Branch
	}
	return CellBranchPrefix + c.Name
}

// RuntimeOrDefault is spec.runtime, or knative when unset.
func (c *Cell) RuntimeOrDefault() CellRuntime {
	if c.Spec.Runtime == "" {
		return RuntimeKnative
	}
	return c.Spec.Runtime
}

// DefaultNamespace is where an app lands when it names no target namespace.
func (c *Cell) DefaultNamespace() string {
	if len(c.Spec.Namespaces) == 0 {
		return ""
	}
	return c.Spec.Namespaces[0]
}

// OwnsNamespace reports whether ns is one of the cell's namespaces.
func (c *Cell) OwnsNamespace(ns string) bool {
	for _, n := range c.Spec.Namespaces {
		if n == ns {
			return true
		}
	}
	return false
}

// GetConditions returns the status conditions.
func (c *Cell) GetConditions() []metav1.Condition { return c.Status.Conditions }

// SetConditions sets the status conditions.
func (c *Cell) SetConditions(conditions []metav1.Condition) { c.Status.Conditions = conditions }

// CellList is a list of Cells.
// +kubebuilder:object:root=true
type CellList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Cell `json:"items"`
}

func init() {
	register(&Cell{}, &CellList{})
}
