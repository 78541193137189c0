package render

import (
	"errors"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

func knativeOf(g Gomega, r *RenderedApp) *servingv1.Service {
	svc := &servingv1.Service{}
	g.Expect(r.Files).To(HaveKey(r.Dir + "/service.yaml"))
	g.Expect(yaml.UnmarshalStrict(r.Files[r.Dir+"/service.yaml"], svc)).To(Succeed())
	return svc
}

func TestRenderKnativeService(t *testing.T) {
	g := NewWithT(t)
	app := newApp("hello", func(a *hubv1alpha1.ServerlessApp) {
		a.Spec.Template.Env = []corev1.EnvVar{{Name: "TARGET", Value: "world"}}
		a.Spec.Template.ContainerConcurrency = ptr.To[int64](10)
		a.Spec.Template.Scaling = &hubv1alpha1.Scaling{MinScale: ptr.To[int32](0), MaxScale: ptr.To[int32](5), Target: ptr.To[int32](20)}
	})
	r, err := Render(Input{App: app, Cell: newCell("eu-1")})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(r.Dir).To(Equal("apps/hello"))
	g.Expect(r.Revision).To(HavePrefix("hello-"))
	g.Expect(r.Revision).To(Equal(AppRevision(app)), "no overrides: the cell's revision is the app's")

	svc := knativeOf(g, r)
	g.Expect(svc.APIVersion).To(Equal("serving.knative.dev/v1"))
	g.Expect(svc.Namespace).To(Equal("apps"))
	g.Expect(svc.Spec.Template.Name).To(Equal(r.Revision))
	g.Expect(svc.Spec.Template.Annotations).To(Equal(map[string]string{
		"autoscaling.knative.dev/min-scale": "0",
		"autoscaling.knative.dev/max-scale": "5",
		"autoscaling.knative.dev/target":    "20",
	}))
	g.Expect(*svc.Spec.Template.Spec.ContainerConcurrency).To(BeEquivalentTo(10))
	g.Expect(svc.Spec.Traffic).To(HaveLen(1))
	g.Expect(svc.Spec.Traffic[0].RevisionName).To(Equal(r.Revision))
	g.Expect(*svc.Spec.Traffic[0].Percent).To(BeEquivalentTo(100))
	g.Expect(svc.Labels).To(HaveKeyWithValue(LabelCell, "eu-1"))
	g.Expect(string(r.Files["apps/hello/service.yaml"])).NotTo(ContainSubstring("status"))
	g.Expect(string(r.Files["apps/hello/service.yaml"])).NotTo(ContainSubstring("creationTimestamp"))
}

// The revision named in the app's status is the one each cell runs when no override changes it,
// whatever the template holds.
func TestAppRevisionMatchesCellRevision(t *testing.T) {
	for name, app := range map[string]*hubv1alpha1.ServerlessApp{
		"plain":       newApp("plain"),
		"annotations": newApp("annotated", func(a *hubv1alpha1.ServerlessApp) { a.Spec.Template.Annotations = map[string]string{"x": "y"} }),
		"labels":      newApp("labelled", func(a *hubv1alpha1.ServerlessApp) { a.Spec.Template.Labels = map[string]string{"x": "y"} }),
		"scaling": newApp("scaled", func(a *hubv1alpha1.ServerlessApp) {
			a.Spec.Template.Scaling = &hubv1alpha1.Scaling{MaxScale: ptr.To[int32](3)}
		}),
	} {
		t.Run(name, func(t *testing.T) {
			r, err := Render(Input{App: app, Cell: newCell("eu-1")})
			if err != nil {
				t.Fatal(err)
			}
			if r.Revision != AppRevision(app) {
				t.Fatalf("cell runs %s, app status would say %s", r.Revision, AppRevision(app))
			}
		})
	}
}

func TestRenderIsDeterministicAndRevisionFollowsContent(t *testing.T) {
	g := NewWithT(t)
	a := newApp("hello")
	r1, err := Render(Input{App: a, Cell: newCell("eu-1")})
	g.Expect(err).NotTo(HaveOccurred())
	r2, err := Render(Input{App: a.DeepCopy(), Cell: newCell("eu-1")})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(r2.Files).To(Equal(r1.Files))

	b := newApp("hello", func(a *hubv1alpha1.ServerlessApp) { a.Spec.Template.Image = "ghcr.io/acme/hello:v2" })
	g.Expect(AppRevision(b)).NotTo(Equal(AppRevision(a)))
	// Metadata that is not part of the template does not change the revision.
	c := a.DeepCopy()
	c.Generation, c.Labels = 7, map[string]string{"x": "y"}
	g.Expect(AppRevision(c)).To(Equal(AppRevision(a)))
}

func TestRenderDomainsAndSchedules(t *testing.T) {
	g := NewWithT(t)
	app := newApp("hello", func(a *hubv1alpha1.ServerlessApp) {
		a.Spec.Domains = []string{"{app}.sls-{cluster}.example.com"}
		a.Spec.Schedules = []hubv1alpha1.Schedule{{Name: "nightly", Schedule: "0 3 * * *", TimeZone: "Europe/Berlin", Data: `{"x":1}`}}
	})
	r, err := Render(Input{App: app, Cell: newCell("eu-1")})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(r.Paths()).To(Equal([]string{
		"apps/hello/domainmapping-hello.sls-member-1.example.com.yaml",
		"apps/hello/pingsource-nightly.yaml",
		"apps/hello/service.yaml",
	}))
	dm := string(r.Files["apps/hello/domainmapping-hello.sls-member-1.example.com.yaml"])
	g.Expect(dm).To(ContainSubstring("kind: DomainMapping"))
	g.Expect(dm).To(ContainSubstring("apiVersion: serving.knative.dev/v1beta1"))
	ps := map[string]any{}
	g.Expect(yaml.Unmarshal(r.Files["apps/hello/pingsource-nightly.yaml"], &ps)).To(Succeed())
	g.Expect(ps["apiVersion"]).To(Equal("sources.knative.dev/v1"))
	g.Expect(ps["spec"]).To(HaveKeyWithValue("schedule", "0 3 * * *"))
	g.Expect(ps["spec"]).To(HaveKeyWithValue("timezone", "Europe/Berlin"))
}

func TestRenderKubernetesRuntime(t *testing.T) {
	g := NewWithT(t)
	app := newApp("hello", func(a *hubv1alpha1.ServerlessApp) {
		a.Spec.Template.Scaling = &hubv1alpha1.Scaling{MinScale: ptr.To[int32](0), MaxScale: ptr.To[int32](4)}
	})
	cell := newCell("k8s-1", func(c *hubv1alpha1.Cell) { c.Spec.Runtime = hubv1alpha1.RuntimeKubernetes })
	r, err := Render(Input{App: app, Cell: cell})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(r.Paths()).To(Equal([]string{"apps/hello/deployment.yaml", "apps/hello/hpa.yaml", "apps/hello/service.yaml"}))
	g.Expect(string(r.Files["apps/hello/hpa.yaml"])).To(ContainSubstring("minReplicas: 1"))
	g.Expect(string(r.Files["apps/hello/hpa.yaml"])).To(ContainSubstring("maxReplicas: 4"))
	g.Expect(string(r.Files["apps/hello/service.yaml"])).To(ContainSubstring("apiVersion: v1"))
	g.Expect(r.Revision).To(Equal(AppRevision(app)))
}

func TestRenderOverrides(t *testing.T) {
	g := NewWithT(t)
	app := newApp("hello")
	smp := hubv1alpha1.CellOverride{Name: "warm", Patches: []hubv1alpha1.Patch{{Patch: `
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "1"
`}}}
	json6902 := hubv1alpha1.CellOverride{Name: "env", Patches: []hubv1alpha1.Patch{{
		Target: &hubv1alpha1.PatchTarget{Kind: "Service", Name: "hello"},
		Patch:  `[{"op": "add", "path": "/spec/template/spec/containers/0/env", "value": [{"name": "REGION", "value": "eu"}]}]`,
	}}}
	r, err := Render(Input{App: app, Cell: newCell("eu-1"), Overrides: []hubv1alpha1.CellOverride{smp, json6902}})
	g.Expect(err).NotTo(HaveOccurred())
	svc := knativeOf(g, r)
	g.Expect(svc.Spec.Template.Annotations).To(HaveKeyWithValue("autoscaling.knative.dev/min-scale", "1"))
	g.Expect(svc.Spec.Template.Spec.Containers[0].Env).To(ContainElement(corev1.EnvVar{Name: "REGION", Value: "eu"}))
	g.Expect(r.Revision).NotTo(Equal(AppRevision(app)), "an override that changes the template changes the revision name")
	g.Expect(svc.Spec.Template.Name).To(Equal(r.Revision))
	g.Expect(svc.Spec.Traffic[0].RevisionName).To(Equal(r.Revision))
}

func TestRenderRejectsBadInput(t *testing.T) {
	badPatch := hubv1alpha1.CellOverride{Name: "broken", Patches: []hubv1alpha1.Patch{{
		Target: &hubv1alpha1.PatchTarget{Kind: "Service", Name: "hello"},
		Patch:  `[{"op": "replace", "path": "/spec/does/not/exist", "value": 1}]`,
	}}}
	tests := []struct {
		name     string
		app      *hubv1alpha1.ServerlessApp
		cell     *hubv1alpha1.Cell
		override []hubv1alpha1.CellOverride
		reason   string
		message  string
	}{
		{name: "invalid image", app: newApp("hello", func(a *hubv1alpha1.ServerlessApp) { a.Spec.Template.Image = "Not A Valid::Image" }),
			reason: hubv1alpha1.ReasonInvalidImage, message: "image"},
		{name: "negative concurrency", app: newApp("hello", func(a *hubv1alpha1.ServerlessApp) { a.Spec.Template.ContainerConcurrency = ptr.To[int64](-1) }),
			reason: hubv1alpha1.ReasonInvalidSpec, message: "containerConcurrency"},
		{name: "bad cron", app: newApp("hello", func(a *hubv1alpha1.ServerlessApp) {
			a.Spec.Schedules = []hubv1alpha1.Schedule{{Name: "x", Schedule: "every day"}}
		}), reason: hubv1alpha1.ReasonInvalidSpec, message: "cron"},
		{name: "bad domain placeholder", app: newApp("hello", func(a *hubv1alpha1.ServerlessApp) { a.Spec.Domains = []string{"{app}.{region}.example.com"} }),
			reason: hubv1alpha1.ReasonInvalidSpec, message: "placeholder"},
		{name: "namespace the cell does not own", app: newApp("hello", func(a *hubv1alpha1.ServerlessApp) { a.Spec.TargetNamespace = "kube-system" }),
			reason: hubv1alpha1.ReasonInvalidSpec, message: "does not own namespace"},
		{name: "override that does not apply", app: newApp("hello"), override: []hubv1alpha1.CellOverride{badPatch},
			reason: hubv1alpha1.ReasonOverrideFailed, message: `override "broken" does not apply to cell "eu-1"`},
		{name: "override that makes Knative invalid", app: newApp("hello"), override: []hubv1alpha1.CellOverride{{Name: "neg", Patches: []hubv1alpha1.Patch{{
			Target: &hubv1alpha1.PatchTarget{Kind: "Service"},
			Patch:  `[{"op": "add", "path": "/spec/template/spec/containerConcurrency", "value": -5}]`,
		}}}}, reason: hubv1alpha1.ReasonOverrideFailed, message: "Knative rejects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			cell := tt.cell
			if cell == nil {
				cell = newCell("eu-1")
			}
			err := ValidateApp(tt.app)
			if err == nil {
				_, err = Render(Input{App: tt.app, Cell: cell, Overrides: tt.override})
			}
			g.Expect(err).To(HaveOccurred())
			var inv *InvalidError
			g.Expect(errors.As(err, &inv)).To(BeTrue(), "error %v is not an InvalidError", err)
			g.Expect(inv.Reason).To(Equal(tt.reason))
			g.Expect(strings.ToLower(inv.Message)).To(ContainSubstring(strings.ToLower(tt.message)))
		})
	}
}
