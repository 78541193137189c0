// Package v1alpha1 holds the member-cluster API (agent.cellsync.io/v1alpha1): CellSync, one per
// cell an agent serves. Its status follows Flux's Kustomization contract so that Flux tooling
// and kstatus read it.
// +kubebuilder:object:generate=true
// +groupName=agent.cellsync.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the member API.
	GroupVersion = schema.GroupVersion{Group: "agent.cellsync.io", Version: "v1alpha1"}

	// SchemeBuilder registers the member kinds with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the member kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &CellSync{}, &CellSyncList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
