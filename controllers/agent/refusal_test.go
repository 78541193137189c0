package agent_test

import (
	"time"

	"bytes"
	"context"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/fluxcd/pkg/apis/meta"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	"github.com/cellsync/cellsync/test/testenv"
)

const kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"

func configMap(ns, name string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\ndata:\n  k: v\n"
}

// waitRefused waits for a refusal: Ready=False with the reason, Stalled when stalled is set, and
// the attempted commit recorded.
func waitRefused(t *testing.T, cs *agentv1alpha1.CellSync, commit, reason string, stalled bool, message string) *agentv1alpha1.CellSync {
	t.Helper()
	return waitCS(t, cs, func(g Gomega, got *agentv1alpha1.CellSync) {
		g.Expect(got.Status.LastAttemptedRevision).To(HaveSuffix(commit))
		c := ready(g, got)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(reason), c.Message)
		g.Expect(c.Message).To(ContainSubstring(message))
		g.Expect(apimeta.IsStatusConditionTrue(got.Status.Conditions, meta.StalledCondition)).To(Equal(stalled))
	})
}

func absent(t *testing.T, obj client.Object) {
	t.Helper()
	err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
	NewWithT(t).Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%s must not have been applied (%v)", obj.GetName(), err)
}

// A manifest in a namespace the cell does not own, or a cluster-scoped object, is refused with
// Stalled and a clear message, and nothing of that commit is applied. A dry-run failure of one
// object applies none.
func TestPolicyAndDryRunRefuseWholeCommits(t *testing.T) {
	newNamespace(t, "apps3")
	newNamespace(t, "not-mine")
	cs := newCellSync(agentNamespace, "c3", "c3", []string{"apps3"})

	tests := []struct {
		name    string
		files   map[string]string
		reason  string
		message string
		absent  []client.Object
	}{
		{
			name: "namespace the cell does not own",
			files: map[string]string{
				"kustomization.yaml": kustomization + "- ok.yaml\n- bad.yaml\n",
				"ok.yaml":            configMap("apps3", "ok-1"),
				"bad.yaml":           configMap("not-mine", "sneaky"),
			},
			reason:  agentv1alpha1.ReasonPolicyViolation,
			message: `ConfigMap not-mine/sneaky: namespace "not-mine" is not one of the cell's namespaces (apps3)`,
			absent:  []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "apps3", Name: "ok-1"}}, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "not-mine", Name: "sneaky"}}},
		},
		{
			name: "cluster-scoped object",
			files: map[string]string{
				"kustomization.yaml": kustomization + "- ok.yaml\n- ns.yaml\n",
				"ok.yaml":            configMap("apps3", "ok-2"),
				"ns.yaml":            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: grabbed\n",
			},
			reason:  agentv1alpha1.ReasonPolicyViolation,
			message: "Namespace grabbed: cluster-scoped objects are refused",
			absent:  []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "apps3", Name: "ok-2"}}, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "grabbed"}}},
		},
		{
			name: "dry-run failure of one object",
			files: map[string]string{
				"kustomization.yaml": kustomization + "- ok.yaml\n- svc.yaml\n",
				"ok.yaml":            configMap("apps3", "ok-3"),
				"svc.yaml":           "apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\n  namespace: apps3\nspec:\n  ports:\n  - port: 70000\n",
			},
			reason:  agentv1alpha1.ReasonDryRunFailed,
			message: "server-side dry-run refused the commit, nothing was applied",
			absent:  []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "apps3", Name: "ok-3"}}, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "apps3", Name: "broken"}}},
		},
		{
			name: "remote base",
			files: map[string]string{
				"kustomization.yaml": kustomization + "- https://github.com/example/evil//config?ref=main\n",
			},
			reason:  agentv1alpha1.ReasonInvalidBranch,
			message: "a remote location",
		},
	}
	created := false
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head := publish(t, "cells/c3", nil, rawFiles(tt.files))
			if !created {
				create(t, cs)
				created = true
			}
			waitRefused(t, cs, head, tt.reason, true, tt.message)
			expectEvent(t, cs, tt.reason)
			for _, o := range tt.absent {
				absent(t, o)
			}
		})
	}

	// A good commit after the refusals is applied by itself: Stalled was about that commit only.
	head := publish(t, "cells/c3", nil, rawFiles(map[string]string{"kustomization.yaml": kustomization + "- ok.yaml\n", "ok.yaml": configMap("apps3", "ok-4")}))
	waitApplied(t, cs, head)
}

func expectEvent(t *testing.T, obj *agentv1alpha1.CellSync, reason string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		o := obj.DeepCopy()
		o.SetGroupVersionKind(agentv1alpha1.GroupVersion.WithKind("CellSync"))
		seen, err := testenv.EventsFor(context.Background(), k8s, o)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(seen).To(ContainElement(ContainSubstring("/" + reason)))
	}, timeout, poll).Should(Succeed())
}

// With verify set, an unsigned commit and a commit signed by another key are refused, and the
// last good state stays.
func TestVerifyRefusesUnsignedAndForeignCommits(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "apps4")
	trusted, err := openpgp.NewEntity("hub", "", "hub@cellsync.io", nil)
	g.Expect(err).NotTo(HaveOccurred())
	stranger, err := openpgp.NewEntity("stranger", "", "x@example.com", nil)
	g.Expect(err).NotTo(HaveOccurred())
	var pub bytes.Buffer
	w, _ := armor.Encode(&pub, openpgp.PublicKeyType, nil)
	g.Expect(trusted.Serialize(w)).To(Succeed())
	g.Expect(w.Close()).To(Succeed())
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hub-keys", Namespace: agentNamespace}, Data: map[string][]byte{"hub.asc": pub.Bytes()}})

	cell := hubCell("c4", "apps4")
	good := publish(t, "cells/c4", trusted, putApps(cell, hubApp("signed", "ghcr.io/acme/signed:v1")))
	cs := newCellSync(agentNamespace, "c4", "c4", []string{"apps4"}, func(cs *agentv1alpha1.CellSync) {
		cs.Spec.Verify = &agentv1alpha1.Verification{SecretRef: meta.LocalObjectReference{Name: "hub-keys"}}
	})
	create(t, cs)
	waitApplied(t, cs, good)

	for _, tc := range []struct {
		name    string
		signer  *openpgp.Entity
		message string
	}{
		{"unsigned", nil, "is not signed; refusing to apply it"},
		{"signed by another key", stranger, "is not signed by any trusted key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			bad := publish(t, "cells/c4", tc.signer, putApps(cell, hubApp("signed", "ghcr.io/acme/signed:"+tc.name[:4]), hubApp("intruder", "ghcr.io/acme/intruder:v1")))
			got := waitRefused(t, cs, bad, agentv1alpha1.ReasonVerificationFailed, false, tc.message)
			g.Expect(got.Status.LastAppliedRevision).To(HaveSuffix(good), "the last good commit stays applied")
			_, err := getObject(knativeService, "apps4", "intruder")
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
			svc, err := getObject(knativeService, "apps4", "signed")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(image(g, svc)).To(Equal("ghcr.io/acme/signed:v1"))
		})
	}
	_ = ctx
}

// A tighter policy takes effect at once, without waiting for the interval or a new commit: the
// commit already applied is judged again and refused.
func TestPolicyChangeAppliesAtOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	newNamespace(t, "apps8")
	cell := hubCell("c8", "apps8")
	head := publish(t, "cells/c8", nil, putApps(cell, hubApp("kinds", "ghcr.io/acme/kinds:v1")))
	cs := newCellSync(agentNamespace, "c8", "c8", []string{"apps8"}, func(cs *agentv1alpha1.CellSync) {
		cs.Spec.Interval = metav1.Duration{Duration: 10 * time.Minute}
	})
	create(t, cs)
	waitApplied(t, cs, head)

	cur := &agentv1alpha1.CellSync{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cs), cur)).To(Succeed())
	cur.Spec.Policy.AllowedKinds = []string{"ConfigMap"}
	g.Expect(k8s.Update(ctx, cur)).To(Succeed())
	waitRefused(t, cs, head, agentv1alpha1.ReasonPolicyViolation, true, "kind Service.serving.knative.dev is not in the allowed kinds")
}
