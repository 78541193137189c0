package hub

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/hub/placement"
	"github.com/cellsync/cellsync/hub/status"
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
	// The cached Cells themselves, not copies (10,000 Cells are about 18 MB a copy, at every
	// reconcile of every app): nothing here or in the callers changes a Cell. The test suite runs
	// with client-go's cache mutation detector on, which fails it if anything does.
	cells := &hubv1alpha1.CellList{}
	if err := c.List(ctx, cells, client.UnsafeDisableDeepCopy); err != nil {
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

// appsOfPlacement wakes the apps a changed placement places (and, for the Rollout controller,
// their Rollouts, which have the apps' names).
func appsOfPlacement(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		apps := &hubv1alpha1.ServerlessAppList{}
		if err := c.List(ctx, apps, client.InNamespace(o.GetNamespace()), client.MatchingFields{placementRefIndex: o.GetName()}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Failed to list apps of placement", "placement", klog.KObj(o))
			return nil
		}
		return requestsOf(apps.Items)
	}
}

// allApps wakes every app (or Rollout): a Cell changed, and placements may select it or not.
func allApps(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, _ client.Object) []reconcile.Request {
		apps := &hubv1alpha1.ServerlessAppList{}
		if err := c.List(ctx, apps); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Failed to list apps")
			return nil
		}
		return requestsOf(apps.Items)
	}
}

// requestsOf is a request for each listed object.
func requestsOf[T any, PT interface {
	*T
	client.Object
}](items []T) []reconcile.Request {
	out := make([]reconcile.Request, 0, len(items))
	for i := range items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(PT(&items[i]))})
	}
	return out
}

// writeTroubleChanged passes a Rollout update that changes what the app shows of its trouble
// writing the branches: not every status change of an active canary.
var writeTroubleChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, okOld := e.ObjectOld.(*hubv1alpha1.Rollout)
		n, okNew := e.ObjectNew.(*hubv1alpha1.Rollout)
		if !okOld || !okNew {
			return false
		}
		was, had := status.WriteTrouble(o.Status.Conditions)
		is, has := status.WriteTrouble(n.Status.Conditions)
		return had != has || was != is
	},
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}
