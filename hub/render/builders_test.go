package render

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

func newApp(name string, mut ...func(*hubv1alpha1.ServerlessApp)) *hubv1alpha1.ServerlessApp {
	a := &hubv1alpha1.ServerlessApp{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", Generation: 1},
		Spec: hubv1alpha1.ServerlessAppSpec{
			PlacementRef: corev1.LocalObjectReference{Name: "eu"},
			Template:     hubv1alpha1.RevisionTemplate{Image: "ghcr.io/acme/hello:v1"},
		},
	}
	for _, m := range mut {
		m(a)
	}
	return a
}

func newCell(name string, mut ...func(*hubv1alpha1.Cell)) *hubv1alpha1.Cell {
	c := &hubv1alpha1.Cell{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{hubv1alpha1.LabelEnv: "prod"}},
		Spec:       hubv1alpha1.CellSpec{Cluster: "member-1", Namespaces: []string{"apps", "batch"}},
	}
	for _, m := range mut {
		m(c)
	}
	return c
}
