package render

import (
	"errors"
	"testing"

	. "github.com/onsi/gomega"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

func TestCanarySplit(t *testing.T) {
	g := NewWithT(t)
	v1 := newApp("hello")
	stable, err := Render(Input{App: v1, Cell: newCell("eu-1")})
	g.Expect(err).NotTo(HaveOccurred())

	v2 := newApp("hello", func(a *hubv1alpha1.ServerlessApp) { a.Spec.Template.Image = "ghcr.io/acme/hello:v2" })
	r, err := Render(Input{App: v2, Cell: newCell("eu-1"), Split: &TrafficSplit{StableRevision: stable.Revision, CanaryPercent: 10}})
	g.Expect(err).NotTo(HaveOccurred())
	svc := knativeOf(g, r)
	g.Expect(svc.Spec.Template.Name).To(Equal(r.Revision), "the template is the canary")
	g.Expect(svc.Spec.Traffic).To(HaveLen(2))
	g.Expect(svc.Spec.Traffic[0].RevisionName).To(Equal(stable.Revision))
	g.Expect(*svc.Spec.Traffic[0].Percent).To(BeEquivalentTo(90))
	g.Expect(svc.Spec.Traffic[0].Tag).To(Equal(TagStable))
	g.Expect(svc.Spec.Traffic[1].RevisionName).To(Equal(r.Revision))
	g.Expect(*svc.Spec.Traffic[1].Percent).To(BeEquivalentTo(10))
	g.Expect(svc.Spec.Traffic[1].Tag).To(Equal(TagCanary))

	// A branch's files say whether they hold a canary split (a hub that lost its state reads them).
	for p, b := range r.Files {
		split, err := HasSplit(b)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(split).To(Equal(p == r.Dir+"/service.yaml"), p)
	}
	for p, b := range stable.Files {
		g.Expect(HasSplit(b)).To(BeFalse(), p)
	}
	_, err = HasSplit([]byte("kind: [\n"))
	g.Expect(err).To(HaveOccurred())

	// Promotion: 100 % to the new revision, one target.
	full, err := Render(Input{App: v2, Cell: newCell("eu-1"), Split: &TrafficSplit{StableRevision: r.Revision, CanaryPercent: 100}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(full.Files).To(Equal(mustRender(g, v2)), "a split onto itself renders exactly the plain app")

	_, err = Render(Input{App: v2, Cell: newCell("eu-1"), Split: &TrafficSplit{StableRevision: stable.Revision, CanaryPercent: 120}})
	var inv *InvalidError
	g.Expect(errors.As(err, &inv)).To(BeTrue())
	g.Expect(inv.Message).To(ContainSubstring("not between 0 and 100"))

	k8sCell := newCell("k8s", func(c *hubv1alpha1.Cell) { c.Spec.Runtime = hubv1alpha1.RuntimeKubernetes })
	_, err = Render(Input{App: v2, Cell: k8sCell, Split: &TrafficSplit{StableRevision: "hello-x", CanaryPercent: 10}})
	g.Expect(errors.As(err, &inv)).To(BeTrue())
	g.Expect(inv.Message).To(ContainSubstring("needs a Knative cell"))
}

func mustRender(g Gomega, app *hubv1alpha1.ServerlessApp) map[string][]byte {
	r, err := Render(Input{App: app, Cell: newCell("eu-1")})
	g.Expect(err).NotTo(HaveOccurred())
	return r.Files
}
