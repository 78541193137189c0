package v1alpha1

import (
	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AppSourceSpec says which part of the GitOps repo's source branch holds hub objects, and what
// the source may write. The repository and its credentials are the hub's own (--git-url).
type AppSourceSpec struct {
	// Branch is the source branch.
	// +kubebuilder:default=main
	// +optional
	Branch string `json:"branch,omitempty"`
	// Path is the folder of the branch whose YAML files (*.yaml, *.yml, recursively) hold the
	// hub objects; empty means the whole branch.
	// +kubebuilder:default=apps
	// +optional
	Path string `json:"path,omitempty"`
	// Interval is how often the branch is listed for a new commit.
	// +kubebuilder:default="1m"
	// +optional
	Interval metav1.Duration `json:"interval,omitempty"`
	// Namespaces the source may write namespaced objects into. Empty means only the AppSource's
	// own namespace. Objects without a namespace go to the AppSource's namespace.
	// +optional
	// +listType=set
	Namespaces []string `json:"namespaces,omitempty"`
	// Kinds the source may write, out of Cell, CellPlacement, ServerlessApp and
	// AnalysisTemplate. Cell is cluster-scoped and off by default.
	// +kubebuilder:default={CellPlacement,ServerlessApp,AnalysisTemplate}
	// +optional
	// +listType=set
	Kinds []string `json:"kinds,omitempty"`
	// Prune deletes the objects a commit no longer has.
	// +kubebuilder:default=true
	// +optional
	Prune bool `json:"prune,omitempty"`
	// Suspend stops syncing; what was applied stays.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// SourceObject is one object the source applied: ID is <namespace>_<name>_<group>_<kind>.
type SourceObject struct {
	ID string `json:"id"`
	V  string `json:"v"`
}

// AppSourceStatus is what the source synced last.
type AppSourceStatus struct {
	meta.ReconcileRequestStatus `json:",inline"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// LastSyncedCommit is the source branch commit applied last.
	// +optional
	LastSyncedCommit string `json:"lastSyncedCommit,omitempty"`
	// LastAttemptedCommit is the commit tried last (it differs when that commit was refused).
	// +optional
	LastAttemptedCommit string `json:"lastAttemptedCommit,omitempty"`
	// Objects are what the source applied, for pruning.
	// +optional
	Objects []SourceObject `json:"objects,omitempty"`
	// Conditions: Ready, Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AppSource syncs hub objects from the GitOps repo's source branch: a git push of an app's YAML
// is the normal way to ship it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cssrc,categories=cellsync
// +kubebuilder:printcolumn:name="Branch",type=string,JSONPath=`.spec.branch`
// +kubebuilder:printcolumn:name="Path",type=string,JSONPath=`.spec.path`
// +kubebuilder:printcolumn:name="Synced",type=string,JSONPath=`.status.lastSyncedCommit`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AppSource struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AppSourceSpec   `json:"spec,omitempty"`
	Status AppSourceStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (s *AppSource) GetConditions() []metav1.Condition { return s.Status.Conditions }

// SetConditions sets the status conditions.
func (s *AppSource) SetConditions(c []metav1.Condition) { s.Status.Conditions = c }

// AppSourceList is a list of AppSources.
// +kubebuilder:object:root=true
type AppSourceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AppSource `json:"items"`
}

func init() {
	register(&AppSource{}, &AppSourceList{})
}
