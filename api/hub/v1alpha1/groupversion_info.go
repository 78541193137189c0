// Package v1alpha1 holds the hub API (hub.cellsync.io/v1alpha1): the cells that exist, where apps
// are placed, and the serverless apps themselves.
// +kubebuilder:object:generate=true
// +groupName=hub.cellsync.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every hub kind.
	GroupVersion = schema.GroupVersion{Group: "hub.cellsync.io", Version: "v1alpha1"}

	// SchemeBuilder registers the hub kinds with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the hub kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
