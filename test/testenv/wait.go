package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// WaitTimeout and WaitPoll bound every WaitFor.
var (
	WaitTimeout = 40 * time.Second
	WaitPoll    = 100 * time.Millisecond
)

// StatusObject is an object with kstatus conditions.
type StatusObject interface {
	client.Object
	ConditionsObject
}

// WaitFor polls obj until cond holds and returns what it read last. Every read must also hold
// the status invariants (CheckStatusInvariants), so a controller that breaks them fails the test
// even while the condition is still pending.
func WaitFor[T StatusObject](t testing.TB, c client.Client, obj T, observedGeneration func(T) int64, cond func(g gomega.Gomega, got T)) T {
	t.Helper()
	got := obj.DeepCopyObject().(T)
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(c.Get(context.Background(), client.ObjectKeyFromObject(obj), got)).To(gomega.Succeed())
		g.Expect(CheckStatusInvariants(got, observedGeneration(got))).To(gomega.Succeed())
		cond(g, got)
	}, WaitTimeout, WaitPoll).Should(gomega.Succeed())
	return got
}
