package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/patch"
	"github.com/fluxcd/pkg/ssa"
	ssaerrors "github.com/fluxcd/pkg/ssa/errors"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
	"github.com/cellsync/cellsync/hub/gitstore"
	"github.com/cellsync/cellsync/hub/status"
)

// SourceFieldManager owns the fields the source sync applies.
const SourceFieldManager = "cellsync-source"

// sourceOwnerGroup prefixes the owner labels of the objects a source applied.
const sourceOwnerGroup = "source.hub.cellsync.io"

// sourceKinds are the kinds a source may ever write, and whether they are namespaced.
var sourceKinds = map[string]bool{"Cell": false, "CellPlacement": true, "ServerlessApp": true, "AnalysisTemplate": true}

// AppSourceReconciler syncs hub objects from the GitOps repo's source branch: it lists the
// branch every interval, and on a new commit parses every YAML file under the path, checks each
// object against what the source may write, dry-runs them all, applies them with server-side
// apply, and prunes the objects the commit no longer has. A commit with any problem applies
// nothing.
type AppSourceReconciler struct {
	client.Client
	APIReader client.Reader
	Store     *gitstore.Store
	Recorder  record.EventRecorder
}

// +kubebuilder:rbac:groups=hub.cellsync.io,resources=appsources,verbs=list;watch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=appsources/status,verbs=patch
// +kubebuilder:rbac:groups=hub.cellsync.io,resources=cells;cellplacements;serverlessapps;analysistemplates,verbs=get;list;watch;create;patch;delete

// Reconcile syncs one AppSource.
func (r *AppSourceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	src := &hubv1alpha1.AppSource{}
	if err := r.Get(ctx, req.NamespacedName, src); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patcher := patch.NewSerialPatcher(src, r.Client)
	var out outcome.Outcome
	defer func() {
		if err := outcome.Finish(ctx, patcher, src, out, r.Recorder, FieldManager); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	requested := false
	if v, ok := meta.ReconcileAnnotationValue(src.GetAnnotations()); ok {
		requested = v != src.Status.LastHandledReconcileAt
		src.Status.SetLastHandledReconcileRequest(v)
	}
	if src.Spec.Suspend {
		out = status.Suspended("Syncing is suspended; applied objects stay")
		return ctrl.Result{}, nil
	}
	interval := src.Spec.Interval.Duration
	if interval <= 0 {
		interval = time.Minute
	}
	again := ctrl.Result{RequeueAfter: outcome.Jitter(interval)}
	branch := orDefault(src.Spec.Branch, "main")
	commit, files, err := r.Store.ReadBranch(ctx, branch, src.Spec.Path)
	if err != nil {
		out, result, retErr = status.Fail(err, interval)
		if out.Reason == hubv1alpha1.ReasonBranchNotFound {
			out.Message += "; push the app specs to it"
		}
		return result, retErr
	}
	unchanged := commit == src.Status.LastAttemptedCommit && src.Status.ObservedGeneration == src.Generation && !requested
	if unchanged {
		// The same commit was handled; keep its outcome without applying again.
		out = previousOutcome(src)
		return again, nil
	}
	src.Status.LastAttemptedCommit = commit
	objs, err := r.objects(src, files)
	if err != nil {
		out = outcome.Outcome{Kind: outcome.Stalled, Reason: reasonOf(err), Message: fmt.Sprintf("Commit %s refused, nothing applied: %s", short(commit), err.Error())}
		return again, nil
	}
	if err := r.stamp(ctx, objs, commit); err != nil {
		out = outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonProgressing, Message: err.Error()}
		return ctrl.Result{}, err
	}
	rm := ssa.NewResourceManager(r.Client, polling.NewStatusPoller(r.Client, r.RESTMapper(), polling.Options{}), ssa.Owner{Field: SourceFieldManager, Group: sourceOwnerGroup})
	rm.SetOwnerLabels(objs, src.Name, src.Namespace)
	cs, err := rm.ApplyAllStaged(ctx, objs, ssa.DefaultApplyOptions())
	if err != nil {
		var dry *ssaerrors.DryRunErr
		if errors.As(err, &dry) {
			out = outcome.Outcome{Kind: outcome.Stalled, Reason: hubv1alpha1.ReasonInvalidSource, Message: fmt.Sprintf("Commit %s refused by the hub apiserver, nothing applied: %s", short(commit), dry.Error())}
			return again, nil
		}
		out = outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonProgressing, Message: fmt.Sprintf("Applying commit %s failed: %v", short(commit), err)}
		return ctrl.Result{}, err
	}
	pruned, err := r.prune(ctx, rm, src, objs)
	if err != nil {
		out = outcome.Outcome{Kind: outcome.Retrying, Reason: hubv1alpha1.ReasonProgressing, Message: err.Error()}
		return ctrl.Result{}, err
	}
	src.Status.Objects = sourceObjects(objs)
	src.Status.LastSyncedCommit = commit
	changed := 0
	for _, e := range cs.Entries {
		if e.Action != ssa.UnchangedAction {
			changed++
		}
	}
	if changed > 0 || len(pruned) > 0 {
		r.Recorder.Eventf(src, corev1.EventTypeNormal, hubv1alpha1.ReasonSynced, "Synced commit %s: %d objects, %d changed, %d pruned", short(commit), len(objs), changed, len(pruned))
	}
	out = status.Synced(commit, len(objs))
	return again, nil
}

// previousOutcome repeats the last outcome for a commit already handled.
func previousOutcome(src *hubv1alpha1.AppSource) outcome.Outcome {
	for _, c := range src.Status.Conditions {
		if c.Type != meta.ReadyCondition {
			continue
		}
		if c.Status == metav1.ConditionTrue {
			return outcome.Outcome{Kind: outcome.Succeeded, Reason: c.Reason, Message: c.Message}
		}
		for _, s := range src.Status.Conditions {
			if s.Type == meta.StalledCondition && s.Status == metav1.ConditionTrue {
				return outcome.Outcome{Kind: outcome.Stalled, Reason: c.Reason, Message: c.Message}
			}
		}
	}
	return outcome.Outcome{Kind: outcome.Succeeded, Reason: hubv1alpha1.ReasonSynced, Message: "Synced commit " + short(src.Status.LastSyncedCommit)}
}

// sourceError is a problem with the commit's content that a person must fix in Git.
type sourceError struct {
	reason   string
	problems []string
}

func (e *sourceError) Error() string { return strings.Join(e.problems, "; ") }

// RefusalReason makes a sourceError a status.Refusal: fixed by a commit, not by the AppSource.
func (e *sourceError) RefusalReason() string { return e.reason }

func reasonOf(err error) string {
	var se *sourceError
	if errors.As(err, &se) {
		return se.reason
	}
	return hubv1alpha1.ReasonInvalidSource
}

// objects parses every YAML file and checks every object; all problems are reported together.
func (r *AppSourceReconciler) objects(src *hubv1alpha1.AppSource, files map[string][]byte) ([]*unstructured.Unstructured, error) {
	names := make([]string, 0, len(files))
	for p := range files {
		if ext := path.Ext(p); ext == ".yaml" || ext == ".yml" {
			names = append(names, p)
		}
	}
	sort.Strings(names)
	allowedNS := src.Spec.Namespaces
	if len(allowedNS) == 0 {
		allowedNS = []string{src.Namespace}
	}
	kinds := src.Spec.Kinds
	if len(kinds) == 0 {
		kinds = []string{"CellPlacement", "ServerlessApp", "AnalysisTemplate"}
	}
	var invalid, forbidden []string
	var out []*unstructured.Unstructured
	seen := map[string]string{}
	for _, name := range names {
		objs, err := ssautils.ReadObjects(bytes.NewReader(files[name]))
		if err != nil {
			invalid = append(invalid, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		for _, u := range objs {
			gvk := u.GroupVersionKind()
			id := fmt.Sprintf("%s %s", gvk.Kind, u.GetName())
			namespaced, known := sourceKinds[gvk.Kind]
			switch {
			case gvk.Group != hubv1alpha1.GroupVersion.Group || !known:
				invalid = append(invalid, fmt.Sprintf("%s: %s %q is not a kind the source syncs (it syncs %s of %s)", name, gvk.Kind, u.GetName(), strings.Join(sortedKinds(), ", "), hubv1alpha1.GroupVersion.Group))
				continue
			case gvk.Version != hubv1alpha1.GroupVersion.Version:
				invalid = append(invalid, fmt.Sprintf("%s: %s %q has apiVersion %s; the hub serves %s", name, gvk.Kind, u.GetName(), u.GetAPIVersion(), hubv1alpha1.GroupVersion.String()))
				continue
			case !slices.Contains(kinds, gvk.Kind):
				forbidden = append(forbidden, fmt.Sprintf("%s: %s %q: this source may write only %s", name, gvk.Kind, u.GetName(), strings.Join(kinds, ", ")))
				continue
			case u.GetName() == "":
				invalid = append(invalid, fmt.Sprintf("%s: a %s without metadata.name", name, gvk.Kind))
				continue
			}
			if namespaced {
				if u.GetNamespace() == "" {
					u.SetNamespace(src.Namespace)
				}
				if !slices.Contains(allowedNS, u.GetNamespace()) {
					forbidden = append(forbidden, fmt.Sprintf("%s: %s %s/%s: namespace %q is not one this source may write (allowed: %s)", name, gvk.Kind, u.GetNamespace(), u.GetName(), u.GetNamespace(), strings.Join(allowedNS, ", ")))
					continue
				}
				id = fmt.Sprintf("%s %s/%s", gvk.Kind, u.GetNamespace(), u.GetName())
			} else {
				u.SetNamespace("")
			}
			if prev, ok := seen[id]; ok {
				invalid = append(invalid, fmt.Sprintf("%s: %s is also in %s", name, id, prev))
				continue
			}
			seen[id] = name
			out = append(out, u)
		}
	}
	switch {
	case len(invalid) > 0:
		return nil, &sourceError{reason: hubv1alpha1.ReasonInvalidSource, problems: append(invalid, forbidden...)}
	case len(forbidden) > 0:
		return nil, &sourceError{reason: hubv1alpha1.ReasonSourceForbidden, problems: forbidden}
	}
	return out, nil
}

// stamp annotates each object with the commit it came from. The commit only moves when the
// object's content changes (a digest says so), so a push that changes one app does not make the
// hub re-render every other app.
func (r *AppSourceReconciler) stamp(ctx context.Context, objs []*unstructured.Unstructured, commit string) error {
	for _, u := range objs {
		b, err := json.Marshal(u.Object)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		digest := hex.EncodeToString(sum[:8])
		source := commit
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(u.GroupVersionKind())
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(u), live); err == nil {
			if a := live.GetAnnotations(); a[hubv1alpha1.SourceDigestAnnotation] == digest && a[hubv1alpha1.SourceCommitAnnotation] != "" {
				source = a[hubv1alpha1.SourceCommitAnnotation]
			}
		} else if client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("failed to read %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		ann := u.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[hubv1alpha1.SourceDigestAnnotation] = digest
		ann[hubv1alpha1.SourceCommitAnnotation] = source
		u.SetAnnotations(ann)
	}
	return nil
}

// prune deletes what the previous commit applied and this one no longer has, if it still
// carries this source's owner labels.
func (r *AppSourceReconciler) prune(ctx context.Context, rm *ssa.ResourceManager, src *hubv1alpha1.AppSource, objs []*unstructured.Unstructured) ([]string, error) {
	if !src.Spec.Prune {
		return nil, nil
	}
	keep := map[string]bool{}
	for _, o := range sourceObjects(objs) {
		keep[o.ID] = true
	}
	var stale []*unstructured.Unstructured
	for _, o := range src.Status.Objects {
		if keep[o.ID] {
			continue
		}
		m, err := object.ParseObjMetadata(o.ID)
		if err != nil {
			return nil, fmt.Errorf("status.objects entry %q: %w", o.ID, err)
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(m.GroupKind.WithVersion(o.V))
		u.SetNamespace(m.Namespace)
		u.SetName(m.Name)
		stale = append(stale, u)
	}
	if len(stale) == 0 {
		return nil, nil
	}
	opts := ssa.DefaultDeleteOptions()
	opts.Inclusions = rm.GetOwnerLabels(src.Name, src.Namespace)
	cs, err := rm.DeleteAll(ctx, stale, opts)
	if err != nil {
		return nil, fmt.Errorf("prune failed: %w", err)
	}
	var deleted []string
	for _, e := range cs.Entries {
		if e.Action == ssa.DeletedAction {
			deleted = append(deleted, e.Subject)
		}
	}
	return deleted, nil
}

func sourceObjects(objs []*unstructured.Unstructured) []hubv1alpha1.SourceObject {
	out := make([]hubv1alpha1.SourceObject, 0, len(objs))
	for _, u := range objs {
		out = append(out, hubv1alpha1.SourceObject{ID: object.UnstructuredToObjMetadata(u).String(), V: u.GroupVersionKind().Version})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func sortedKinds() []string {
	out := make([]string, 0, len(sourceKinds))
	for k := range sourceKinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// SetupWithManager registers the reconciler.
func (r *AppSourceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&hubv1alpha1.AppSource{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Named("appsource").
		Complete(r)
}
