package hub

import (
	"context"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

// heartbeatLeases keeps one Lease per cell in the hub's namespace, renewed when the hub sees a
// new heartbeat, as Kubernetes keeps node heartbeats (and OCM cluster heartbeats) in Leases: the
// heartbeat's age is there to read, and the Cell itself changes only when its state does.
type heartbeatLeases struct {
	client    client.Client
	reader    client.Reader
	namespace string

	mu     sync.Mutex
	leases map[string]*coordinationv1.Lease // the last Lease written per cell
}

// LeaseName is the heartbeat Lease of a cell.
func LeaseName(cell string) string { return "cell-" + cell }

// renew sets the cell's Lease to the heartbeat seen at seen (the hub's clock), writing only when
// that moved. It is read from the apiserver only when the hub holds no copy (after a restart).
// The mutex guards the map only, never a request: one cell is reconciled at a time, so its own
// Lease is never renewed twice at once.
func (h *heartbeatLeases) renew(ctx context.Context, cell *hubv1alpha1.Cell, seen time.Time, staleAfter time.Duration) error {
	if h == nil || h.namespace == "" || seen.IsZero() {
		return nil
	}
	renew := metav1.NewMicroTime(seen)
	h.mu.Lock()
	l := h.leases[cell.Name]
	h.mu.Unlock()
	if l != nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.Equal(&renew) {
		return nil
	}
	fresh := false
	if l == nil {
		l = &coordinationv1.Lease{}
		err := h.reader.Get(ctx, client.ObjectKey{Namespace: h.namespace, Name: LeaseName(cell.Name)}, l)
		switch {
		case apierrors.IsNotFound(err):
			fresh = true
			l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: LeaseName(cell.Name),
				Labels: map[string]string{hubv1alpha1.HeartbeatLeaseLabel: cell.Name},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: hubv1alpha1.GroupVersion.String(), Kind: "Cell",
					Name: cell.Name, UID: cell.UID}}}}
		case err != nil:
			return fmt.Errorf("failed to read the heartbeat Lease: %w", err)
		}
	} else {
		l = l.DeepCopy() // the cached copy stays as written until a write succeeds
	}
	l.Spec.HolderIdentity = ptr.To(cell.Name)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(staleAfter / time.Second))
	l.Spec.RenewTime = &renew
	var err error
	if fresh {
		err = h.client.Create(ctx, l)
	} else {
		err = h.client.Update(ctx, l)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.leases == nil {
		h.leases = map[string]*coordinationv1.Lease{}
	}
	if err != nil {
		delete(h.leases, cell.Name) // read again next time
		return fmt.Errorf("failed to renew the heartbeat Lease %s/%s: %w", h.namespace, l.Name, err)
	}
	h.leases[cell.Name] = l
	return nil
}
