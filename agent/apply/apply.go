package apply

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	ssaerrors "github.com/fluxcd/pkg/ssa/errors"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
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
// With one stage (no CRDs, namespaces or classes: the default policy allows none), ssa's own
// dry-run of the whole set already precedes any write, so nothing is dry-run twice. With several
// stages, an earlier stage would be written before a later stage's dry-run, so every object whose
// kind is already served is dry-run first.
func (e *Engine) Apply(ctx context.Context, objs []*unstructured.Unstructured, owner client.ObjectKey, timeout time.Duration) (*ssa.ChangeSet, error) {
	e.manager.SetOwnerLabels(objs, owner.Name, owner.Namespace)
	if staged(objs) {
		if err := e.dryRunAll(ctx, objs); err != nil {
			return nil, err
		}
	}
	opts := ssa.DefaultApplyOptions()
	opts.WaitTimeout = timeout
	opts.WaitInterval = time.Second
	cs, err := e.manager.ApplyAllStaged(ctx, objs, opts)
	var dry *ssaerrors.DryRunErr
	if errors.As(err, &dry) {
		return nil, &DryRunError{Message: "server-side dry-run refused the commit, nothing was applied: " + dry.Error() + rbacHint(objs)}
	}
	if err != nil {
		return cs, fmt.Errorf("apply failed: %w", err)
	}
	return cs, nil
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

// dryRunAll dry-runs every object whose kind the cluster serves and reports every refusal.
func (e *Engine) dryRunAll(ctx context.Context, objs []*unstructured.Unstructured) error {
	var problems []string
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		if _, err := e.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			continue // a kind that a CRD of this same commit brings; ssa dry-runs it in its stage
		}
		dry := u.DeepCopy()
		err := e.client.Patch(ctx, dry, client.Apply, client.DryRunAll, client.ForceOwnership, client.FieldOwner(agentv1alpha1.FieldManager)) //nolint:staticcheck // unstructured apply
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s %s: %v", gvk.Kind, manifests.ID(u), err))
		}
	}
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
