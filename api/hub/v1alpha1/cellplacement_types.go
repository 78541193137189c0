package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PlacementTopology says what a selection of cells stands for.
// +kubebuilder:validation:Enum=Cell;Cluster
type PlacementTopology string

const (
	// TopologyCell places on exactly the selected cells.
	TopologyCell PlacementTopology = "Cell"
	// TopologyCluster places on every cell of the clusters that host a selected cell.
	TopologyCluster PlacementTopology = "Cluster"
)

// MaxStatusCells bounds the cell names a status lists; the count is always complete.
const MaxStatusCells = 256

// CellPlacementSpec says which cells an app goes to and how each cell's copy differs.
// +kubebuilder:validation:XValidation:rule="has(self.cellSelector) || (has(self.cells) && size(self.cells) > 0)",message="set cellSelector, cells, or both"
type CellPlacementSpec struct {
	// CellSelector selects cells by label. Combined with cells as a union.
	// +optional
	CellSelector *metav1.LabelSelector `json:"cellSelector,omitempty"`

	// Cells names cells explicitly.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	Cells []string `json:"cells,omitempty"`

	// Topology Cell places on the selected cells; Cluster on every cell of their clusters.
	// +kubebuilder:default=Cell
	// +optional
	Topology PlacementTopology `json:"topology,omitempty"`

	// Overrides patch the rendered manifests of the cells they select, in order.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Overrides []CellOverride `json:"overrides,omitempty"`
}

// CellOverride applies kustomize patches to the manifests of some placed cells.
type CellOverride struct {
	// Name identifies the override in status and messages.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// CellSelector picks the placed cells the override applies to; empty picks all of them.
	// +optional
	CellSelector *metav1.LabelSelector `json:"cellSelector,omitempty"`

	// Cells picks placed cells by name, in addition to the selector.
	// +optional
	// +listType=set
	Cells []string `json:"cells,omitempty"`

	// Patches are kustomize patches: strategic merge (a partial object) or JSON 6902
	// (a list of operations, which needs a target).
	// +kubebuilder:validation:MinItems=1
	Patches []Patch `json:"patches"`
}

// Patch is one kustomize patch.
type Patch struct {
	// Patch is the patch body: a strategic merge patch or a JSON 6902 patch, as YAML.
	// +kubebuilder:validation:MinLength=1
	Patch string `json:"patch"`

	// Target selects the rendered objects the patch applies to. Required for JSON 6902 patches.
	// +optional
	Target *PatchTarget `json:"target,omitempty"`
}

// PatchTarget selects rendered objects, as kustomize's patch target does.
type PatchTarget struct {
	// +optional
	Group string `json:"group,omitempty"`
	// +optional
	Version string `json:"version,omitempty"`
	// +optional
	Kind string `json:"kind,omitempty"`
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// +optional
	LabelSelector string `json:"labelSelector,omitempty"`
	// +optional
	AnnotationSelector string `json:"annotationSelector,omitempty"`
}

// CellPlacementStatus lists what the placement resolved to.
type CellPlacementStatus struct {
	// ObservedGeneration is the last generation resolved.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ResolvedCells lists the resolved cells, sorted, at most 256 of them; see cellCount.
	// +optional
	// +listType=set
	ResolvedCells []string `json:"resolvedCells,omitempty"`

	// CellCount is how many cells the placement resolved to.
	// +optional
	CellCount int `json:"cellCount,omitempty"`

	// Conditions: Ready, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CellPlacement says which cells the apps that reference it run in.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cpl,categories=cellsync
// +kubebuilder:printcolumn:name="Topology",type=string,JSONPath=`.spec.topology`
// +kubebuilder:printcolumn:name="Cells",type=integer,JSONPath=`.status.cellCount`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CellPlacement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CellPlacementSpec   `json:"spec,omitempty"`
	Status CellPlacementStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (p *CellPlacement) GetConditions() []metav1.Condition { return p.Status.Conditions }

// SetConditions sets the status conditions.
func (p *CellPlacement) SetConditions(conditions []metav1.Condition) {
	p.Status.Conditions = conditions
}

// CellPlacementList is a list of CellPlacements.
// +kubebuilder:object:root=true
type CellPlacementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CellPlacement `json:"items"`
}

func init() {
	register(&CellPlacement{}, &CellPlacementList{})
}
