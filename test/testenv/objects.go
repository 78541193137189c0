package testenv

import (
	"context"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RequestReconcile sets reconcile.fluxcd.io/requestedAt on obj, as `flux reconcile` does, and
// returns the token to wait for in status.lastHandledReconcileAt.
func RequestReconcile(ctx context.Context, c client.Client, obj client.Object) (string, error) {
	token := time.Now().Format(time.RFC3339Nano)
	patch := []byte(`{"metadata":{"annotations":{"` + meta.ReconcileRequestAnnotation + `":"` + token + `"}}}`)
	return token, c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch))
}

// EventsFor lists "<type>/<reason>" of the events recorded for obj.
func EventsFor(ctx context.Context, c client.Client, obj client.Object) ([]string, error) {
	events := &corev1.EventList{}
	if err := c.List(ctx, events, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil, err
	}
	var out []string
	for _, e := range events.Items {
		if e.InvolvedObject.Name == obj.GetName() && e.InvolvedObject.Kind == obj.GetObjectKind().GroupVersionKind().Kind {
			out = append(out, e.Type+"/"+e.Reason)
		}
	}
	return out, nil
}
