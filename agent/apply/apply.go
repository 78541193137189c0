package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	ssaerrors "github.com/fluxcd/pkg/ssa/errors"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cellsync/cellsync/agent/manifests"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
)

// Engine applies objects with one client (the agent's, or an impersonated one).
type Engine struct {
	client  client.Client
	mapper  meta.RESTMapper
	manager *ssa.ResourceManager
}

// New returns an engine for the client.
func New(c client.Client) *Engine {
	poller := polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{})
	rm := ssa.NewResourceManager(c, poller, ssa.Owner{Field: agentv1alpha1.FieldManager, Group: agentv1alpha1.OwnerGroup})
	// The apiserver takes concurrent requests: reads and dry-runs of a commit's objects run in
	// parallel (the writes that follow stay ordered).
	rm.SetConcurrency(Concurrency)
	return &Engine{client: c, mapper: c.RESTMapper(), manager: rm}
}

// Concurrency is how many objects of one commit are read and dry-run at once.
const Concurrency = 8

// Client is the client the engine applies with.
func (e *Engine) Client() client.Client { return e.client }

// DryRunError is an object the apiserver refuses; nothing was applied.
type DryRunError struct{ Message string }

func (e *DryRunError) Error() string { return e.Message }

// Apply dry-runs every object and only if all pass, applies them in stages. Objects the apply
// leaves unchanged are not written (their resourceVersion stays).
//
// A small single-stage commit (no CRDs, namespaces or classes: the default policy allows none)
// goes through ssa's ApplyAll, whose dry-run of the whole set precedes any write, so nothing is
// dry-run twice. A larger one is dry-run in full first, then applied kind by kind in ssa's order,
// the objects of one kind in parallel: the apiserver takes concurrent requests, and one commit
// of a hundred Services is then not a hundred writes in a row. Each parallel batch's ApplyAll
// dry-runs its objects once more before it writes; that second dry-run is the price of parallel
// writes that never leave part of a refused commit applied. With several stages an earlier
// stage is written before a later stage's dry-run, so every object whose kind is already served
// is dry-run first there too.
func (e *Engine) Apply(ctx context.Context, objs []*unstructured.Unstructured, owner client.ObjectKey, timeout time.Duration) (*ssa.ChangeSet, error) {
	e.manager.SetOwnerLabels(objs, owner.Name, owner.Namespace)
	opts := ssa.DefaultApplyOptions()
	opts.WaitTimeout = timeout
	opts.WaitInterval = time.Second
	var (
		cs  *ssa.ChangeSet
		err error
	)
	switch {
	case staged(objs):
		if err := e.dryRunAll(ctx, objs); err != nil {
			return nil, err
		}
		cs, err = e.manager.ApplyAllStaged(ctx, objs, opts)
	case len(objs) <= Concurrency:
		cs, err = e.manager.ApplyAll(ctx, objs, opts)
	default:
		if err := e.dryRunAll(ctx, objs); err != nil {
			return nil, err
		}
		cs, err = e.applyByKind(ctx, objs, opts)
	}
	var dry *ssaerrors.DryRunErr
	if errors.As(err, &dry) && refused(dry.Unwrap()) {
		return nil, &DryRunError{Message: "server-side dry-run refused the commit, nothing was applied: " + dry.Error() + rbacHint(objs)}
	}
	if err != nil {
		return cs, fmt.Errorf("apply failed: %w", err)
	}
	return cs, nil
}

// applyByKind applies one kind after the other in ssa's order, the objects of a kind in up to
// Concurrency parallel batches.
func (e *Engine) applyByKind(ctx context.Context, objs []*unstructured.Unstructured, opts ssa.ApplyOptions) (*ssa.ChangeSet, error) {
	sorted := append([]*unstructured.Unstructured(nil), objs...)
	sort.Sort(ssa.SortableUnstructureds(sorted))
	all := ssa.NewChangeSet()
	for len(sorted) > 0 {
		n := 1
		for n < len(sorted) && sorted[n].GroupVersionKind().GroupKind() == sorted[0].GroupVersionKind().GroupKind() {
			n++
		}
		kind := sorted[:n]
		sorted = sorted[n:]
		batches := make([][]*unstructured.Unstructured, min(Concurrency, len(kind)))
		for i, u := range kind {
			batches[i%len(batches)] = append(batches[i%len(batches)], u)
		}
		results := make([]*ssa.ChangeSet, len(batches))
		g, gctx := errgroup.WithContext(ctx)
		for i, batch := range batches {
			g.Go(func() error {
				cs, err := e.manager.ApplyAll(gctx, batch, opts)
				results[i] = cs
				return err
			})
		}
		err := g.Wait()
		for _, cs := range results {
			if cs != nil {
				all.Append(cs.Entries)
			}
		}
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

// refused reports whether the apiserver refused an object for what it is (invalid, forbidden,
// a missing namespace or kind): the commit stays refused until it or the cluster changes. A
// timeout, an unavailable apiserver or a deadline is not a refusal; it is tried again.
func refused(err error) bool {
	switch apierrors.ReasonForError(err) {
	case metav1.StatusReasonInvalid, metav1.StatusReasonForbidden, metav1.StatusReasonBadRequest,
		metav1.StatusReasonNotFound, metav1.StatusReasonConflict, metav1.StatusReasonAlreadyExists,
		metav1.StatusReasonMethodNotAllowed, metav1.StatusReasonRequestEntityTooLarge,
		metav1.StatusReasonUnsupportedMediaType, metav1.StatusReasonNotAcceptable, metav1.StatusReasonGone:
		return true
	}
	return meta.IsNoMatchError(err)
}

// rbacHint explains the usual cause when a commit with RBAC objects is refused: Kubernetes lets
// the applying ServiceAccount grant only what it holds itself (or bind/escalate), and dry-runs a
// RoleBinding against Roles that exist, not against a Role of the same commit.
func rbacHint(objs []*unstructured.Unstructured) string {
	for _, u := range objs {
		if u.GroupVersionKind().Group == "rbac.authorization.k8s.io" {
			return " (the commit has RBAC objects: the ServiceAccount the agent applies as must hold every permission they grant, or the bind and escalate verbs; a RoleBinding is checked against Roles that already exist, so a Role and its RoleBinding go in two commits)"
		}
	}
	return ""
}

// staged reports whether ssa will apply objs in more than one stage.
func staged(objs []*unstructured.Unstructured) bool {
	for _, u := range objs {
		if ssautils.IsClusterDefinition(u) || ssautils.IsClassDefinition(u) {
			return true
		}
	}
	return false
}

// dryRunAll dry-runs every object whose kind the cluster serves, Concurrency at a time, and
// reports every refusal.
func (e *Engine) dryRunAll(ctx context.Context, objs []*unstructured.Unstructured) error {
	problems := make([]string, len(objs))
	g := errgroup.Group{}
	g.SetLimit(Concurrency)
	for i, u := range objs {
		gvk := u.GroupVersionKind()
		if _, err := e.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			continue // a kind that a CRD of this same commit brings; ssa dry-runs it in its stage
		}
		g.Go(func() error {
			dry := u.DeepCopy()
			err := e.client.Patch(ctx, dry, client.Apply, client.DryRunAll, client.ForceOwnership, client.FieldOwner(agentv1alpha1.FieldManager)) //nolint:staticcheck // unstructured apply
			switch {
			case err == nil:
			case refused(err):
				problems[i] = fmt.Sprintf("%s %s: %v", gvk.Kind, manifests.ID(u), err)
			default:
				return fmt.Errorf("dry-run of %s %s: %w", gvk.Kind, manifests.ID(u), err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err // the apiserver could not be asked (timeout, unavailable): tried again
	}
	problems = slices.DeleteFunc(problems, func(p string) bool { return p == "" })
	if len(problems) > 0 {
		sort.Strings(problems)
		return &DryRunError{Message: "server-side dry-run refused the commit, nothing was applied: " + strings.Join(problems, "; ") + rbacHint(objs)}
	}
	return nil
}

// Prune deletes the objects of the previous inventory that the new objects no longer have.
// Only what the agent applied is ever deleted.
func (e *Engine) Prune(ctx context.Context, owner client.ObjectKey, previous []agentv1alpha1.ResourceRef, objs []*unstructured.Unstructured) ([]string, error) {
	keep := map[string]bool{}
	for _, u := range objs {
		keep[manifests.ID(u)] = true
	}
	var stale []*unstructured.Unstructured
	for _, ref := range previous {
		if keep[ref.ID] {
			continue
		}
		u, err := fromRef(ref)
		if err != nil {
			return nil, err
		}
		stale = append(stale, u)
	}
	if len(stale) == 0 {
		return nil, nil
	}
	opts := ssa.DefaultDeleteOptions()
	opts.PropagationPolicy = metav1.DeletePropagationBackground
	// Only delete what still carries our owner labels: an object someone else took over stays.
	opts.Inclusions = e.manager.GetOwnerLabels(owner.Name, owner.Namespace)
	cs, err := e.manager.DeleteAll(ctx, stale, opts)
	if err != nil {
		return nil, fmt.Errorf("prune failed: %w", err)
	}
	var deleted []string
	for _, entry := range cs.Entries {
		if entry.Action == ssa.DeletedAction {
			deleted = append(deleted, entry.Subject)
		}
	}
	return deleted, nil
}

// Inventory lists the objects as Flux inventory entries, sorted.
func Inventory(objs []*unstructured.Unstructured) []agentv1alpha1.ResourceRef {
	out := make([]agentv1alpha1.ResourceRef, 0, len(objs))
	for _, u := range objs {
		out = append(out, agentv1alpha1.ResourceRef{ID: manifests.ID(u), V: u.GroupVersionKind().Version})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// fromRef is an inventory entry as an object that carries only its identity, for deletion.
func fromRef(ref agentv1alpha1.ResourceRef) (*unstructured.Unstructured, error) {
	m, err := object.ParseObjMetadata(ref.ID)
	if err != nil {
		return nil, fmt.Errorf("inventory entry %q: %w", ref.ID, err)
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(m.GroupKind.WithVersion(ref.V))
	u.SetNamespace(m.Namespace)
	u.SetName(m.Name)
	return u, nil
}
