package render

import (
	"fmt"
	"strings"

	"github.com/robfig/cron/v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingv1beta1 "knative.dev/serving/pkg/apis/serving/v1beta1"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// PingSource's group and version (Knative Eventing); rendered without importing Eventing.
const pingSourceAPIVersion = "sources.knative.dev/v1"

var domainPlaceholders = []string{"{app}", "{namespace}", "{cell}", "{cluster}"}

func validateDomainTemplate(tmpl string) error {
	probe := expandDomain(tmpl, "app", "ns", "cell", "cluster")
	if strings.ContainsAny(probe, "{}") {
		return invalid(hubv1alpha1.ReasonInvalidSpec, "domain template %q has an unknown placeholder; use %s", tmpl, strings.Join(domainPlaceholders, ", "))
	}
	if errs := validation.IsDNS1123Subdomain(probe); len(errs) > 0 {
		return invalid(hubv1alpha1.ReasonInvalidSpec, "domain template %q does not make a valid host name: %s", tmpl, strings.Join(errs, "; "))
	}
	return nil
}

func expandDomain(tmpl, app, ns, cell, cluster string) string {
	return strings.NewReplacer("{app}", app, "{namespace}", ns, "{cell}", cell, "{cluster}", cluster).Replace(tmpl)
}

func domainMappings(app *hubv1alpha1.ServerlessApp, cell *hubv1alpha1.Cell, ns string) ([]object, error) {
	var out []object
	for _, tmpl := range app.Spec.Domains {
		host := expandDomain(tmpl, app.Name, ns, cell.Name, cell.Spec.Cluster)
		if errs := validation.IsDNS1123Subdomain(host); len(errs) > 0 {
			return nil, invalid(hubv1alpha1.ReasonInvalidSpec, "domain %q for cell %q is not a valid host name: %s", host, cell.Name, strings.Join(errs, "; "))
		}
		dm := &servingv1beta1.DomainMapping{}
		dm.APIVersion = servingv1beta1.SchemeGroupVersion.String()
		dm.Kind = "DomainMapping"
		dm.Name = host
		dm.Namespace = ns
		dm.Labels = objectLabels(app, cell)
		dm.Spec.Ref = duckv1.KReference{APIVersion: servingv1.SchemeGroupVersion.String(), Kind: "Service", Name: app.Name}
		m, err := toMap(dm)
		if err != nil {
			return nil, err
		}
		out = append(out, object{file: "domainmapping-" + host + ".yaml", obj: m})
	}
	return out, nil
}

func validateSchedule(s hubv1alpha1.Schedule) error {
	spec := s.Schedule
	if s.TimeZone != "" {
		spec = "CRON_TZ=" + s.TimeZone + " " + spec
	}
	if _, err := cron.ParseStandard(spec); err != nil {
		return invalid(hubv1alpha1.ReasonInvalidSpec, "schedule %q has an invalid cron expression or time zone %q: %v", s.Name, s.Schedule, err)
	}
	if errs := validation.IsDNS1123Label(s.Name); len(errs) > 0 {
		return invalid(hubv1alpha1.ReasonInvalidSpec, "schedule name %q is not a valid name: %s", s.Name, strings.Join(errs, "; "))
	}
	return nil
}

func pingSources(app *hubv1alpha1.ServerlessApp, cell *hubv1alpha1.Cell, ns, sinkAPIVersion, sinkKind string) []object {
	var out []object
	for _, s := range app.Spec.Schedules {
		spec := map[string]any{
			"schedule": s.Schedule,
			"sink": map[string]any{"ref": map[string]any{
				"apiVersion": sinkAPIVersion, "kind": sinkKind, "name": app.Name,
			}},
		}
		if s.TimeZone != "" {
			spec["timezone"] = s.TimeZone
		}
		if s.Data != "" {
			spec["data"] = s.Data
		}
		if s.ContentType != "" {
			spec["contentType"] = s.ContentType
		}
		labels := map[string]any{}
		for k, v := range objectLabels(app, cell) {
			labels[k] = v
		}
		out = append(out, object{file: "pingsource-" + s.Name + ".yaml", obj: map[string]any{
			"apiVersion": pingSourceAPIVersion,
			"kind":       "PingSource",
			"metadata":   map[string]any{"name": app.Name + "-" + s.Name, "namespace": ns, "labels": labels},
			"spec":       spec,
		}})
	}
	return out
}

// kubernetesObjects renders the app for a cell without Knative: a Deployment, a Service in
// front of it and a HorizontalPodAutoscaler standing in for the Knative autoscaler. Such cells
// cannot scale to zero, so the floor is one replica.
func kubernetesObjects(app *hubv1alpha1.ServerlessApp, cell *hubv1alpha1.Cell, ns string) ([]object, error) {
	labels := objectLabels(app, cell)
	selector := map[string]string{LabelApp: app.Name}
	revision := AppRevision(app)
	rt := revisionTemplate(app, "")
	port := app.Spec.Template.Port
	if port == 0 {
		port = 8080
	}
	container := rt.Spec.Containers[0]
	container.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: port}}
	container.Env = append([]corev1.EnvVar{{Name: "PORT", Value: fmt.Sprint(port)}}, container.Env...)

	podLabels := map[string]string{LabelApp: app.Name}
	for k, v := range rt.Labels {
		podLabels[k] = v
	}
	dep := &appsv1.Deployment{}
	dep.APIVersion, dep.Kind = appsv1.SchemeGroupVersion.String(), "Deployment"
	dep.Name, dep.Namespace, dep.Labels = app.Name, ns, labels
	dep.Spec.Selector = &metav1.LabelSelector{MatchLabels: selector}
	dep.Spec.Template.Labels = podLabels
	dep.Spec.Template.Annotations = map[string]string{"cellsync.io/revision": revision}
	for k, v := range app.Spec.Template.Annotations {
		dep.Spec.Template.Annotations[k] = v
	}
	dep.Spec.Template.Spec.ServiceAccountName = rt.Spec.ServiceAccountName
	dep.Spec.Template.Spec.Containers = []corev1.Container{container}

	svc := &corev1.Service{}
	svc.APIVersion, svc.Kind = "v1", "Service"
	svc.Name, svc.Namespace, svc.Labels = app.Name, ns, labels
	svc.Spec.Selector = selector
	svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(port)}}

	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	hpa.APIVersion, hpa.Kind = autoscalingv2.SchemeGroupVersion.String(), "HorizontalPodAutoscaler"
	hpa.Name, hpa.Namespace, hpa.Labels = app.Name, ns, labels
	hpa.Spec.ScaleTargetRef = autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: app.Name}
	minR, maxR, target := int32(1), int32(10), int32(80)
	if s := app.Spec.Template.Scaling; s != nil {
		if s.MinScale != nil && *s.MinScale > 1 {
			minR = *s.MinScale
		}
		if s.MaxScale != nil && *s.MaxScale > 0 {
			maxR = *s.MaxScale
		}
		if s.Metric == "cpu" && s.Target != nil {
			target = *s.Target
		}
	}
	if maxR < minR {
		return nil, invalid(hubv1alpha1.ReasonInvalidSpec, "scaling.maxScale %d is below minScale %d", maxR, minR)
	}
	hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas = &minR, maxR
	hpa.Spec.Metrics = []autoscalingv2.MetricSpec{{
		Type: autoscalingv2.ResourceMetricSourceType,
		Resource: &autoscalingv2.ResourceMetricSource{
			Name:   corev1.ResourceCPU,
			Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: &target},
		},
	}}
	var objs []object
	for _, o := range []struct {
		file string
		obj  any
	}{{"deployment.yaml", dep}, {"service.yaml", svc}, {"hpa.yaml", hpa}} {
		m, err := toMap(o.obj.(runtime.Object))
		if err != nil {
			return nil, err
		}
		objs = append(objs, object{file: o.file, obj: m})
	}
	return append(objs, pingSources(app, cell, ns, "v1", "Service")...), nil
}
