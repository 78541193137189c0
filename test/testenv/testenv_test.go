package testenv

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The test environment the agent and e2e suites stand on: real Knative Serving CRDs in a real
// apiserver, and kwok reporting Knative status — Ready for a good image, RevisionFailed for a
// ":broken" one.
func TestKnativeStatusFromKwok(t *testing.T) {
	g := NewWithT(t)
	cluster, err := StartCluster(ClusterOptions{KwokStages: []string{KnativeStages()}})
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kwok log:\n%s", cluster.KwokLog())
		}
		_ = cluster.Stop()
	})
	scheme := runtime.NewScheme()
	g.Expect(servingv1.AddToScheme(scheme)).To(Succeed())
	g.Expect(corev1.AddToScheme(scheme)).To(Succeed())
	c, err := client.New(cluster.Config, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	ctx := context.Background()
	g.Expect(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}})).To(Succeed())

	svc := func(name, image string) *servingv1.Service {
		s := &servingv1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "apps"}}
		s.Spec.Template.Name = name + "-00001"
		s.Spec.Template.Spec.Containers = []corev1.Container{{Image: image}}
		return s
	}
	good, bad := svc("good", "ghcr.io/acme/hello:v1"), svc("bad", "ghcr.io/acme/hello:broken")
	g.Expect(c.Create(ctx, good)).To(Succeed())
	g.Expect(c.Create(ctx, bad)).To(Succeed())

	g.Eventually(func(g Gomega) {
		got := &servingv1.Service{}
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(good), got)).To(Succeed())
		ready := got.Status.GetCondition(apis.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.IsTrue()).To(BeTrue())
		g.Expect(got.Status.LatestReadyRevisionName).To(Equal("good-00001"))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		got := &servingv1.Service{}
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(bad), got)).To(Succeed())
		ready := got.Status.GetCondition(apis.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.IsFalse()).To(BeTrue())
		g.Expect(ready.Reason).To(Equal("RevisionFailed"))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}
