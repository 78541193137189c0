package hub

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/placement"
)

// FieldManager is the hub's field manager for every write it makes.
const FieldManager = "cellsync-hub"

// orRealClock is a reconciler's injected clock, or the real one when none is.
func orRealClock(c clock.PassiveClock) clock.PassiveClock {
	if c == nil {
		return clock.RealClock{}
	}
	return c
}

// resolvePlacement lists the cells and resolves the placement against its namespace's tenant.
func resolvePlacement(ctx context.Context, c client.Client, pl *hubv1alpha1.CellPlacement) ([]hubv1alpha1.Cell, *placement.Result, error) {
	cells := &hubv1alpha1.CellList{}
	if err := c.List(ctx, cells); err != nil {
		return nil, nil, fmt.Errorf("failed to list cells: %w", err)
	}
	tenant, err := namespaceTenant(ctx, c, pl.Namespace)
	if err != nil {
		return nil, nil, err
	}
	res, err := placement.Resolve(pl, cells.Items, tenant)
	if err != nil {
		return nil, nil, err
	}
	return cells.Items, res, nil
}

// namespaceTenant is the tenant label of a hub namespace ("" when it has none).
func namespaceTenant(ctx context.Context, c client.Client, name string) (string, error) {
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		return "", fmt.Errorf("failed to read namespace %q: %w", name, err)
	}
	return ns.Labels[hubv1alpha1.LabelTenant], nil
}

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
