// Package v1alpha1 holds the hub API (hub.cellsync.io/v1alpha1): the cells that exist, where apps
// are placed, and the serverless apps themselves.
// +kubebuilder:object:generate=true
// +groupName=hub.cellsync.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every hub kind.
	GroupVersion = schema.GroupVersion{Group: "hub.cellsync.io", Version: "v1alpha1"}

	// SchemeBuilder registers the hub kinds with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the hub kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme

	knownTypes []runtime.Object
)

// register records kinds for addKnownTypes; each kind's file calls it from init.
func register(objs ...runtime.Object) { knownTypes = append(knownTypes, objs...) }

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, knownTypes...)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
