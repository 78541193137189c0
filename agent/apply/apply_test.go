package apply

import (
	"context"
	"errors"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// A refusal is about the object (it stays refused until the commit or the cluster changes);
// anything about reaching the apiserver is retried, never reported as a refused commit.
func TestRefused(t *testing.T) {
	gr := schema.GroupResource{Group: "serving.knative.dev", Resource: "services"}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, "web", nil), true},
		{"forbidden", apierrors.NewForbidden(gr, "web", errors.New("no")), true},
		{"namespace not found", apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "apps"), true},
		{"conflict", apierrors.NewConflict(gr, "web", errors.New("field owned")), true},
		{"bad request", apierrors.NewBadRequest("nope"), true},
		{"kind not served", &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "x.io", Kind: "Thing"}}, true},
		{"wrapped refusal", fmt.Errorf("dry-run: %w", apierrors.NewForbidden(gr, "web", errors.New("no"))), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "patch", 1), false},
		{"unavailable", apierrors.NewServiceUnavailable("etcd"), false},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), false},
		{"internal error", apierrors.NewInternalError(errors.New("boom")), false},
		{"deadline", context.DeadlineExceeded, false},
		{"connection refused", errors.New("dial tcp 127.0.0.1:6443: connect: connection refused"), false},
	}
	for _, tt := range tests {
		if got := refused(tt.err); got != tt.want {
			t.Errorf("%s: refused = %v, want %v", tt.name, got, tt.want)
		}
	}
}
