package render

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// Version is the renderer's version, recorded in every cell branch's metadata.
const Version = "cellsync-render/v1"

// Labels the renderer puts on every object so a cell can tell where it came from.
const (
	LabelManagedBy    = "app.kubernetes.io/managed-by"
	LabelName         = "app.kubernetes.io/name"
	LabelApp          = agentv1alpha1.LabelApp
	LabelAppNamespace = agentv1alpha1.LabelAppNamespace
	LabelCell         = "cellsync.io/cell"
	ManagedByValue    = "cellsync"
)

// Knative autoscaling annotation keys.
const (
	annMinScale    = "autoscaling.knative.dev/min-scale"
	annMaxScale    = "autoscaling.knative.dev/max-scale"
	annTarget      = "autoscaling.knative.dev/target"
	annMetric      = "autoscaling.knative.dev/metric"
	annRetention   = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"
	maxAppNameLen  = 52 // leaves room for "-<hash>" inside Knative's 63-character revision names
	revisionHashSz = 10
)

// Input is everything one cell's copy of an app depends on.
type Input struct {
	App  *hubv1alpha1.ServerlessApp
	Cell *hubv1alpha1.Cell
	// Overrides are the placement's overrides that select this cell, in placement order.
	Overrides []hubv1alpha1.CellOverride
	// Split, when set, sends only part of the traffic to the rendered (canary) revision.
	Split *TrafficSplit
}

// TrafficSplit is a canary step inside one cell: the revision already running there keeps
// 100-CanaryPercent of the traffic. Both are tagged, so tag URLs and Knative-Serving-Tag header
// routing reach either one.
type TrafficSplit struct {
	// StableRevision is the revision the cell runs now (from its branch), by name.
	StableRevision string
	// CanaryPercent is the canary's share, 0 to 100.
	CanaryPercent int64
}

// Traffic tags of a canary step.
const (
	TagStable = "stable"
	TagCanary = "canary"
)

// RenderedApp is one app rendered for one cell.
type RenderedApp struct {
	// Dir is the app's folder in the cell branch: <target namespace>/<app>.
	Dir string
	// Files maps a path below the branch root to its content.
	Files map[string][]byte
	// Revision is the Knative revision name in this cell (overrides can change it).
	Revision string
	// TargetNamespace is where the app lands in the cell.
	TargetNamespace string
}

// Paths returns the rendered file paths, sorted.
func (r *RenderedApp) Paths() []string {
	out := make([]string, 0, len(r.Files))
	for p := range r.Files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// object is a rendered manifest before it becomes YAML.
type object struct {
	file string
	obj  map[string]any
}

// ValidateApp checks what does not depend on a cell: the name, the template (with Knative's own
// validation), the schedules and the domain templates.
func ValidateApp(app *hubv1alpha1.ServerlessApp) error {
	if errs := validation.IsDNS1035Label(app.Name); len(errs) > 0 {
		return invalid(hubv1alpha1.ReasonInvalidSpec, "app name %q is not a valid Knative Service name: %s", app.Name, strings.Join(errs, "; "))
	}
	if len(app.Name) > maxAppNameLen {
		return invalid(hubv1alpha1.ReasonInvalidSpec, "app name %q is longer than %d characters, leaving no room for revision names", app.Name, maxAppNameLen)
	}
	if err := validateKnative(knativeService(app, app.Namespace, AppRevision(app))); err != nil {
		return err
	}
	for _, s := range app.Spec.Schedules {
		if err := validateSchedule(s); err != nil {
			return err
		}
	}
	for _, d := range app.Spec.Domains {
		if err := validateDomainTemplate(d); err != nil {
			return err
		}
	}
	return nil
}

func validateKnative(svc *servingv1.Service) error {
	ctx := apis.WithinCreate(context.Background())
	defaulted := svc.DeepCopy()
	defaulted.SetDefaults(ctx)
	// Knative reports warnings (insecure defaults and the like) in the same error; only
	// error-level findings block rendering.
	fe := defaulted.Validate(ctx).Filter(apis.ErrorLevel)
	if fe == nil {
		return nil
	}
	reason := hubv1alpha1.ReasonInvalidSpec
	msg := strings.ReplaceAll(fe.Error(), "\n", "; ")
	if strings.Contains(msg, "containers[0].image") {
		reason = hubv1alpha1.ReasonInvalidImage
	}
	return invalid(reason, "Knative rejects the template: %s", msg)
}

// AppRevision names the app's revision template as written, before any cell's overrides:
// <app>-<content hash>.
func AppRevision(app *hubv1alpha1.ServerlessApp) string {
	m, err := toMap(knativeService(app, "", ""))
	if err != nil {
		return app.Name
	}
	tmpl, _, _ := unstructuredNested(m, "spec", "template")
	return revisionName(app.Name, tmpl)
}

// revisionName hashes a revision template, leaving out its own name, so that the name changes
// exactly when the content does (Knative refuses a changed template under an unchanged name).
func revisionName(app string, template map[string]any) string {
	c := make(map[string]any, len(template))
	for k, v := range template {
		c[k] = v
	}
	if meta, ok := c["metadata"].(map[string]any); ok {
		mc := make(map[string]any, len(meta))
		for k, v := range meta {
			if k != "name" {
				mc[k] = v
			}
		}
		c["metadata"] = mc
	}
	// A template whose metadata holds only its name hashes like one without metadata, so the
	// app-level and per-cell revision names agree.
	if meta, ok := c["metadata"].(map[string]any); ok && len(meta) == 0 {
		delete(c, "metadata")
	}
	// json.Marshal sorts map keys, so the hash is stable.
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return app + "-" + hex.EncodeToString(sum[:])[:revisionHashSz]
}

// Render renders one app for one cell.
func Render(in Input) (*RenderedApp, error) {
	app, cell := in.App, in.Cell
	ns := app.Spec.TargetNamespace
	if ns == "" {
		ns = cell.DefaultNamespace()
	}
	if !cell.OwnsNamespace(ns) {
		return nil, invalid(hubv1alpha1.ReasonInvalidSpec, "cell %q does not own namespace %q (it owns %s)", cell.Name, ns, strings.Join(cell.Spec.Namespaces, ", "))
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return nil, invalid(hubv1alpha1.ReasonInvalidSpec, "target namespace %q is not a valid namespace name", ns)
	}
	dir := path.Join(ns, app.Name)
	var objs []object
	var err error
	switch cell.RuntimeOrDefault() {
	case hubv1alpha1.RuntimeKubernetes:
		objs, err = kubernetesObjects(app, cell, ns)
	default:
		objs, err = knativeObjects(app, cell, ns)
	}
	if err != nil {
		return nil, err
	}
	if len(in.Overrides) > 0 {
		if objs, err = applyOverrides(objs, in.Overrides, cell.Name); err != nil {
			return nil, err
		}
	}
	revision, err := finalizeRevision(app.Name, objs)
	if err != nil {
		return nil, err
	}
	if in.Split != nil {
		if err := splitTraffic(objs, revision, *in.Split); err != nil {
			return nil, err
		}
	}
	out := &RenderedApp{Dir: dir, Files: make(map[string][]byte, len(objs)), Revision: revision, TargetNamespace: ns}
	for _, o := range objs {
		p := path.Join(dir, o.file)
		if !isLocalPath(p) || !strings.HasPrefix(p, dir+"/") {
			return nil, invalid(hubv1alpha1.ReasonInvalidSpec, "rendered file %q would leave the app's folder", p)
		}
		b, err := encodeYAML(o.obj)
		if err != nil {
			return nil, fmt.Errorf("failed to encode %s: %w", p, err)
		}
		out.Files[p] = b
	}
	return out, nil
}

// isLocalPath reports whether p stays inside the tree it is relative to.
func isLocalPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") {
		return false
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}

func objectLabels(app *hubv1alpha1.ServerlessApp, cell *hubv1alpha1.Cell) map[string]string {
	return map[string]string{
		LabelManagedBy:    ManagedByValue,
		LabelName:         app.Name,
		LabelApp:          app.Name,
		LabelAppNamespace: app.Namespace,
		LabelCell:         cell.Name,
	}
}

func revisionTemplate(app *hubv1alpha1.ServerlessApp, name string) servingv1.RevisionTemplateSpec {
	t := app.Spec.Template
	c := corev1.Container{
		Name:      "app",
		Image:     t.Image,
		Command:   t.Command,
		Args:      t.Args,
		Env:       t.Env,
		Resources: t.Resources,
	}
	if t.Port != 0 {
		c.Ports = []corev1.ContainerPort{{Name: "http1", ContainerPort: t.Port}}
	}
	annotations := map[string]string{}
	for k, v := range t.Annotations {
		annotations[k] = v
	}
	if s := t.Scaling; s != nil {
		setInt(annotations, annMinScale, s.MinScale)
		setInt(annotations, annMaxScale, s.MaxScale)
		setInt(annotations, annTarget, s.Target)
		if s.Metric != "" {
			annotations[annMetric] = s.Metric
		}
		if s.ScaleToZeroRetention != nil {
			annotations[annRetention] = s.ScaleToZeroRetention.Duration.String()
		}
	}
	if len(annotations) == 0 {
		annotations = nil
	}
	rt := servingv1.RevisionTemplateSpec{}
	rt.Name = name
	rt.Labels = t.Labels
	rt.Annotations = annotations
	rt.Spec.ServiceAccountName = t.ServiceAccountName
	rt.Spec.Containers = []corev1.Container{c}
	rt.Spec.ContainerConcurrency = t.ContainerConcurrency
	rt.Spec.TimeoutSeconds = t.TimeoutSeconds
	return rt
}

func setInt(m map[string]string, key string, v *int32) {
	if v != nil {
		m[key] = fmt.Sprint(*v)
	}
}

func knativeService(app *hubv1alpha1.ServerlessApp, ns string, revision string) *servingv1.Service {
	svc := &servingv1.Service{}
	svc.APIVersion = servingv1.SchemeGroupVersion.String()
	svc.Kind = "Service"
	svc.Name = app.Name
	svc.Namespace = ns
	svc.Spec.Template = revisionTemplate(app, revision)
	latest := false
	percent := int64(100)
	svc.Spec.Traffic = []servingv1.TrafficTarget{{RevisionName: revision, Percent: &percent, LatestRevision: &latest}}
	return svc
}

func knativeObjects(app *hubv1alpha1.ServerlessApp, cell *hubv1alpha1.Cell, ns string) ([]object, error) {
	svc := knativeService(app, ns, AppRevision(app))
	svc.Labels = objectLabels(app, cell)
	m, err := toMap(svc)
	if err != nil {
		return nil, err
	}
	objs := []object{{file: "service.yaml", obj: m}}
	domains, err := domainMappings(app, cell, ns)
	if err != nil {
		return nil, err
	}
	objs = append(objs, domains...)
	return append(objs, pingSources(app, cell, ns, servingv1.SchemeGroupVersion.String(), "Service")...), nil
}

// toMap turns a typed object into the map that becomes YAML, without status or empty
// creation timestamps.
func toMap(obj runtime.Object) (map[string]any, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("failed to convert %T: %w", obj, err)
	}
	delete(m, "status")
	pruneEmpty(m)
	return m, nil
}

// pruneEmpty drops nil values and empty maps (creationTimestamp: null, resources: {}), which
// the typed structs produce and a reader does not want to see.
func pruneEmpty(m map[string]any) {
	for k, v := range m {
		switch t := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			pruneEmpty(t)
			if len(t) == 0 {
				delete(m, k)
			}
		case []any:
			for _, e := range t {
				if em, ok := e.(map[string]any); ok {
					pruneEmpty(em)
				}
			}
		}
	}
}
