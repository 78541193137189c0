package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/patch"
	"github.com/go-git/go-git/v5/plumbing/transport"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/cellsync/cellsync/agent/analysis"
	"github.com/cellsync/cellsync/agent/apply"
	"github.com/cellsync/cellsync/agent/manifests"
	"github.com/cellsync/cellsync/agent/source"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	"github.com/cellsync/cellsync/controllers/gitauth"
	"github.com/cellsync/cellsync/controllers/outcome"
)

// Finalizer lets the agent prune what it applied before a CellSync goes.
const Finalizer = "agent.cellsync.io/finalizer"

// HealthyCondition says whether the applied workloads are healthy.
const HealthyCondition = "Healthy"

// CellSyncReconciler runs cell branches in this cluster.
type CellSyncReconciler struct {
	client.Client
	// Config is the agent's own rest config, the base for impersonating service accounts.
	Config *rest.Config
	// DataDir holds one bare Git mirror per CellSync.
	DataDir  string
	Recorder record.EventRecorder
	// Version is reported in every status report.
	Version string
	// HealthPoll is how often health is polled while waiting (default 500ms).
	HealthPoll time.Duration
	// Namespace is the only namespace whose CellSyncs the agent serves: a CellSync anywhere
	// else (one a branch smuggled in, say) is never read.
	Namespace string
	// DefaultServiceAccount is impersonated for CellSyncs that name none.
	DefaultServiceAccount string
	// Workers is how many CellSyncs sync at once, so one slow or hostile cell does not hold
	// up the others.
	Workers int
	// CommitDeadline bounds fetching, reading and applying one commit.
	CommitDeadline time.Duration
	// Now is the agent's clock, for its heartbeat times (time.Now when nil).
	Now func() time.Time

	mu      sync.Mutex
	state   map[types.NamespacedName]*syncState
	engines map[string]*apply.Engine
}

// syncState is what the agent remembers between reconciles of one CellSync. Losing it (a
// restart) costs one no-op re-apply and one report, nothing more.
type syncState struct {
	repo      *source.Repo
	repoFor   string
	applied   string
	appliedAt time.Time
	// appliedFor is the generation and reconcile request the last apply was for: a new spec or
	// an explicit request re-applies at once instead of waiting for the interval.
	appliedFor string
	reportHash string
	reportAt   time.Time
	// reporter pushes the reports, remembering the last one it pushed (a heartbeat is then one
	// request).
	reporter *source.Reporter
	objects  []*unstructured.Unstructured
	health   []apply.Health
	// refusal is the last commit refused and why, for the report, until the head is applied.
	refusal *agentv1alpha1.Refusal
	// oversized is the head (and trigger) whose fetch was refused for its size: it is not
	// fetched again until the branch moves or the spec changes. Other refusals are cheap to
	// find again, and may pass once the cluster changes (a CRD, RBAC), so they are retried.
	oversized string
	// signer is the parsed report-signing key, for the Secret version it was read from.
	signer    *openpgp.Entity
	signerFor string
	// listedWith is how the branch was last listed ("" before the first listing).
	listedWith string
	// analyses are the canary analyses of the applied commit, and runs their measurements
	// (by analysis ID and commit).
	analyses []agentv1alpha1.Analysis
	runs     map[string]*analysis.Run
}

// +kubebuilder:rbac:groups=agent.cellsync.io,namespace=cellsync-system,resources=cellsyncs,verbs=list;watch;patch
// +kubebuilder:rbac:groups=agent.cellsync.io,namespace=cellsync-system,resources=cellsyncs/status,verbs=patch
// +kubebuilder:rbac:groups="",namespace=cellsync-system,resources=secrets,verbs=get
// +kubebuilder:rbac:groups="",namespace=cellsync-system,resources=serviceaccounts,verbs=impersonate
// +kubebuilder:rbac:groups="",namespace=cellsync-system,resources=events,verbs=create;patch

// Reconcile runs one CellSync.
func (r *CellSyncReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	cs := &agentv1alpha1.CellSync{}
	if err := r.Get(ctx, req.NamespacedName, cs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patcher := patch.NewSerialPatcher(cs, r.Client)
	st := r.stateFor(req.NamespacedName)
	var out outcome.Outcome
	var auth transport.AuthMethod
	defer func() {
		if cs.DeletionTimestamp.IsZero() && out.Reason != "" {
			outcome.SetConditions(cs, out)
			r.report(ctx, cs, st, auth)
		}
		if err := outcome.Finish(ctx, patcher, cs, out, r.Recorder, agentv1alpha1.FieldManager, HealthyCondition); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()
	if !cs.DeletionTimestamp.IsZero() {
		out, retErr = r.finalize(ctx, cs)
		return ctrl.Result{}, retErr
	}
	controllerutil.AddFinalizer(cs, Finalizer)
	if v, ok := meta.ReconcileAnnotationValue(cs.GetAnnotations()); ok {
		cs.Status.SetLastHandledReconcileRequest(v)
	}
	if cs.Spec.Suspend {
		out = outcome.Outcome{Kind: outcome.Succeeded, Reason: meta.SuspendedReason, Message: "Suspended; what is applied stays"}
		return ctrl.Result{}, nil
	}
	var err error
	auth, err = r.auth(ctx, cs)
	if err != nil {
		out = gitOutcome(err, "")
		return ctrl.Result{RequeueAfter: outcome.Jitter(cs.IntervalOrDefault())}, nil
	}
	out = r.sync(ctx, cs, st, auth)
	after := outcome.Jitter(min(cs.IntervalOrDefault(), cs.HeartbeatOrDefault()))
	if next := r.analyze(ctx, cs, st); !next.IsZero() {
		after = min(after, max(next.Sub(r.now()), analysisWake))
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

// sync brings the cluster to the branch head, or keeps the last good commit applied when the
// head cannot be had (Git down, unsigned commit), and says how that went.
func (r *CellSyncReconciler) sync(ctx context.Context, cs *agentv1alpha1.CellSync, st *syncState, auth transport.AuthMethod) outcome.Outcome {
	repo, err := r.repoFor(cs, st)
	if err != nil {
		return gitOutcome(err, "")
	}
	trigger := fmt.Sprintf("%d/%s", cs.Generation, cs.Status.LastHandledReconcileAt)
	// The deadline bounds fetching, reading and applying the commit; the health reads that
	// follow have the CellSync's own timeout.
	commitCtx, cancel := context.WithTimeout(ctx, r.commitDeadline())
	defer cancel()
	head, problem := r.fetchHead(commitCtx, cs, st, repo, auth, trigger)
	r.overDeadline(commitCtx, problem)
	target := head
	if problem != nil {
		target = commitOf(cs.Status.LastAppliedRevision)
		if target == "" || !repo.Has(target) {
			return *problem
		}
		problem.Message += keeping(target)
	}
	due := target != st.applied || trigger != st.appliedFor || time.Since(st.appliedAt) >= cs.IntervalOrDefault()
	if !due || commitCtx.Err() != nil {
		// Nothing to apply (a heartbeat-only wake-up), or no time left to repair the last good
		// commit (the next interval does): just a fresh look at health.
		st.health = r.health(ctx, cs, st.objects, 0)
		return worst(problem, healthOutcome(cs, st.health, target))
	}
	objs, analyses, o := r.load(cs, repo, target)
	if o == nil {
		o = r.apply(commitCtx, cs, objs)
	}
	r.overDeadline(commitCtx, o)
	if o != nil {
		if o.Kind == outcome.Stalled {
			st.refusal = &agentv1alpha1.Refusal{Commit: target, Reason: o.Reason, Message: o.Message}
		}
		return r.keepLastGood(ctx, cs, st, *o)
	}
	cs.Status.LastAppliedRevision = revision(cs.BranchName(), target)
	st.applied, st.appliedAt, st.appliedFor, st.objects, st.analyses = target, time.Now(), trigger, objs, analyses
	if problem == nil {
		st.refusal = nil // the head itself is applied; a drift repair of the last good commit is not
	}
	st.health = r.health(ctx, cs, objs, cs.TimeoutOrDefault())
	return worst(problem, healthOutcome(cs, st.health, target))
}

// fetchHead finds the branch head and brings it to disk, verified; a problem says why not. A head
// refused before for what it holds is not fetched or read again.
func (r *CellSyncReconciler) fetchHead(ctx context.Context, cs *agentv1alpha1.CellSync, st *syncState, repo *source.Repo, auth transport.AuthMethod, trigger string) (string, *outcome.Outcome) {
	head, err := repo.Head(ctx, auth)
	if err != nil {
		o := gitOutcome(err, "Failed to list the remote: ")
		return "", &o
	}
	if p := repo.Protocol().String(); p != st.listedWith {
		st.listedWith = p
		ctrl.LoggerFrom(ctx).Info("Listing the branch with " + p)
	}
	if head == "" {
		return "", &outcome.Outcome{Kind: outcome.Waiting, Reason: agentv1alpha1.ReasonGitOperationFailed, Message: fmt.Sprintf("Branch %s does not exist yet", cs.BranchName())}
	}
	cs.Status.LastAttemptedRevision = revision(cs.BranchName(), head)
	if st.oversized == head+"/"+trigger && st.refusal != nil {
		return "", &outcome.Outcome{Kind: outcome.Stalled, Reason: st.refusal.Reason, Message: st.refusal.Message}
	}
	if err := repo.Fetch(ctx, auth, head); err != nil {
		var limit *source.LimitError
		if errors.As(err, &limit) {
			o := outcome.Outcome{Kind: outcome.Stalled, Reason: agentv1alpha1.ReasonLimitExceeded, Message: fmt.Sprintf("Commit %s refused: %s", short(head), limit.Message)}
			st.oversized, st.refusal = head+"/"+trigger, &agentv1alpha1.Refusal{Commit: head, Reason: o.Reason, Message: o.Message}
			return "", &o
		}
		o := gitOutcome(err, "Failed to fetch: ")
		return "", &o
	}
	if cs.Spec.Verify != nil {
		keys, err := r.trustedKeys(ctx, cs)
		if err == nil {
			err = repo.Verify(head, keys)
		}
		if err != nil {
			return "", &outcome.Outcome{Kind: outcome.Failed, Reason: agentv1alpha1.ReasonVerificationFailed, Message: err.Error()}
		}
	}
	return head, nil
}

// keepLastGood says that a commit was refused, and that the last good one stays applied.
func (r *CellSyncReconciler) keepLastGood(ctx context.Context, cs *agentv1alpha1.CellSync, st *syncState, o outcome.Outcome) outcome.Outcome {
	if st.applied != "" {
		o.Message += keeping(st.applied)
		st.health = r.health(ctx, cs, st.objects, 0)
	}
	return o
}

func keeping(commit string) string { return fmt.Sprintf("; keeping commit %s applied", short(commit)) }

// gitOutcome sorts a Git error: refused credentials or host keys need a person (Stalled, with
// the reason the hub uses too); anything else is retried.
func gitOutcome(err error, prefix string) outcome.Outcome {
	var (
		auth *gitauth.AuthError
		cfg  *gitauth.ConfigError
	)
	switch {
	case errors.As(err, &auth):
		return outcome.Outcome{Kind: outcome.Stalled, Reason: agentv1alpha1.ReasonGitAuthFailed, Message: prefix + auth.Error()}
	case errors.As(err, &cfg):
		return outcome.Outcome{Kind: outcome.Stalled, Reason: agentv1alpha1.ReasonGitOperationFailed, Message: prefix + cfg.Error()}
	default:
		return outcome.Outcome{Kind: outcome.Retrying, Reason: agentv1alpha1.ReasonGitOperationFailed, Message: prefix + err.Error()}
	}
}

// load reads the commit's objects and analyses and applies the cell's policy to them.
func (r *CellSyncReconciler) load(cs *agentv1alpha1.CellSync, repo *source.Repo, commit string) ([]*unstructured.Unstructured, []agentv1alpha1.Analysis, *outcome.Outcome) {
	tree, err := repo.Tree(commit)
	var objs []*unstructured.Unstructured
	var analyses []agentv1alpha1.Analysis
	if err == nil {
		objs, err = manifests.Load(tree)
	}
	if err == nil {
		analyses, err = manifests.LoadAnalyses(tree, objs)
	}
	if err == nil {
		p := cs.Spec.Policy
		err = manifests.Check(objs, manifests.Policy{
			Namespaces: p.Namespaces, AllowedKinds: p.AllowedKinds, AllowClusterScoped: p.AllowClusterScoped,
			AllowRBAC: p.AllowRBAC, PodSecurity: p.PodSecurity,
		}, manifests.ScopeFromMapper(r.RESTMapper()))
	}
	var inv *manifests.InvalidError
	if errors.As(err, &inv) {
		return nil, nil, &outcome.Outcome{Kind: outcome.Stalled, Reason: inv.Reason, Message: fmt.Sprintf("Commit %s refused: %s", short(commit), inv.Message)}
	}
	if err != nil {
		return nil, nil, &outcome.Outcome{Kind: outcome.Retrying, Reason: agentv1alpha1.ReasonInvalidBranch, Message: fmt.Sprintf("Cannot read commit %s: %v", short(commit), err)}
	}
	return objs, analyses, nil
}

// apply dry-runs, applies and prunes, and records the inventory.
func (r *CellSyncReconciler) apply(ctx context.Context, cs *agentv1alpha1.CellSync, objs []*unstructured.Unstructured) *outcome.Outcome {
	engine, err := r.engine(cs)
	if err != nil {
		return &outcome.Outcome{Kind: outcome.Stalled, Reason: agentv1alpha1.ReasonApplyFailed, Message: err.Error()}
	}
	owner := client.ObjectKeyFromObject(cs)
	if _, err := engine.Apply(ctx, objs, owner, cs.TimeoutOrDefault()); err != nil {
		var dry *apply.DryRunError
		if errors.As(err, &dry) {
			return &outcome.Outcome{Kind: outcome.Stalled, Reason: agentv1alpha1.ReasonDryRunFailed, Message: dry.Message}
		}
		return &outcome.Outcome{Kind: outcome.Retrying, Reason: agentv1alpha1.ReasonApplyFailed, Message: err.Error()}
	}
	if cs.Spec.Prune && cs.Status.Inventory != nil {
		deleted, err := engine.Prune(ctx, owner, cs.Status.Inventory.Entries, objs)
		if err != nil {
			return &outcome.Outcome{Kind: outcome.Retrying, Reason: meta.PruneFailedReason, Message: err.Error()}
		}
		if len(deleted) > 0 {
			r.Recorder.Eventf(cs, corev1.EventTypeNormal, "Pruned", "Pruned %s", strings.Join(deleted, ", "))
		}
	}
	cs.Status.Inventory = &agentv1alpha1.ResourceInventory{Entries: apply.Inventory(objs)}
	return nil
}

// health reads the applied objects' health as the CellSync's ServiceAccount.
func (r *CellSyncReconciler) health(ctx context.Context, cs *agentv1alpha1.CellSync, objs []*unstructured.Unstructured, timeout time.Duration) []apply.Health {
	poll := r.HealthPoll
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	engine, err := r.engine(cs)
	if err != nil {
		return nil
	}
	return apply.WaitForHealth(ctx, engine.Client(), objs, timeout, poll)
}

// overDeadline says so in o when the commit deadline cut the work short: it is tried again at
// the next interval.
func (r *CellSyncReconciler) overDeadline(commitCtx context.Context, o *outcome.Outcome) {
	if o != nil && errors.Is(commitCtx.Err(), context.DeadlineExceeded) {
		o.Kind = outcome.Retrying
		o.Message = fmt.Sprintf("The commit deadline of %s (--commit-deadline) passed, trying again at the next interval: %s", r.commitDeadline(), o.Message)
	}
}

func (r *CellSyncReconciler) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

func (r *CellSyncReconciler) commitDeadline() time.Duration {
	if r.CommitDeadline <= 0 {
		return 5 * time.Minute
	}
	return r.CommitDeadline
}

// finalize prunes what the CellSync applied (when prune is on) and lets it go.
func (r *CellSyncReconciler) finalize(ctx context.Context, cs *agentv1alpha1.CellSync) (outcome.Outcome, error) {
	if cs.Spec.Prune && cs.Status.Inventory != nil && !cs.Spec.Suspend {
		engine, err := r.engine(cs)
		if err == nil {
			_, err = engine.Prune(ctx, client.ObjectKeyFromObject(cs), cs.Status.Inventory.Entries, nil)
		}
		if err != nil {
			return outcome.Outcome{Kind: outcome.Retrying, Reason: meta.PruneFailedReason, Message: err.Error()}, err
		}
	}
	controllerutil.RemoveFinalizer(cs, Finalizer)
	r.mu.Lock()
	delete(r.state, client.ObjectKeyFromObject(cs))
	r.mu.Unlock()
	return outcome.Outcome{Kind: outcome.Waiting, Reason: "Deleting", Message: "Pruned and released"}, nil
}

func (r *CellSyncReconciler) stateFor(key types.NamespacedName) *syncState {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == nil {
		r.state = map[types.NamespacedName]*syncState{}
	}
	st, ok := r.state[key]
	if !ok {
		st = &syncState{}
		r.state[key] = st
	}
	return st
}

func (r *CellSyncReconciler) repoFor(cs *agentv1alpha1.CellSync, st *syncState) (*source.Repo, error) {
	want := cs.Spec.URL + "#" + cs.BranchName()
	if st.repo != nil && st.repoFor == want {
		return st.repo, nil
	}
	repo, err := source.Open(filepath.Join(r.DataDir, cs.Namespace+"_"+cs.Name+".git"), cs.Spec.URL, cs.BranchName())
	if err != nil {
		return nil, err
	}
	st.repo, st.repoFor = repo, want
	return repo, nil
}

func (r *CellSyncReconciler) auth(ctx context.Context, cs *agentv1alpha1.CellSync) (transport.AuthMethod, error) {
	return r.authFor(ctx, cs, cs.Spec.URL)
}

// authFor is the CellSync's credentials for url (its repository, or its status repository).
func (r *CellSyncReconciler) authFor(ctx context.Context, cs *agentv1alpha1.CellSync, url string) (transport.AuthMethod, error) {
	if cs.Spec.SecretRef == nil {
		return nil, nil
	}
	s := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: cs.Namespace, Name: cs.Spec.SecretRef.Name}, s); err != nil {
		return nil, fmt.Errorf("failed to read the Git credentials Secret %q: %w", cs.Spec.SecretRef.Name, err)
	}
	return gitauth.AuthFromSecret(s, url)
}

func (r *CellSyncReconciler) trustedKeys(ctx context.Context, cs *agentv1alpha1.CellSync) ([]string, error) {
	s := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: cs.Namespace, Name: cs.Spec.Verify.SecretRef.Name}, s); err != nil {
		return nil, fmt.Errorf("failed to read the trusted keys Secret %q: %w", cs.Spec.Verify.SecretRef.Name, err)
	}
	var keys []string
	for _, v := range s.Data {
		keys = append(keys, string(v))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the trusted keys Secret %q holds no keys", cs.Spec.Verify.SecretRef.Name)
	}
	return keys, nil
}

// engine applies as spec.serviceAccountName, or the agent's default ServiceAccount: never with
// the agent's own identity. Engines are kept per ServiceAccount, so their connections are reused.
func (r *CellSyncReconciler) engine(cs *agentv1alpha1.CellSync) (*apply.Engine, error) {
	sa := cs.Spec.ServiceAccountName
	if sa == "" {
		sa = r.DefaultServiceAccount
	}
	if sa == "" {
		return nil, fmt.Errorf("the CellSync names no serviceAccountName and the agent has no --default-service-account")
	}
	user := fmt.Sprintf("system:serviceaccount:%s:%s", cs.Namespace, sa)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.engines[user]; ok {
		return e, nil
	}
	cfg := rest.CopyConfig(r.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := client.New(cfg, client.Options{Scheme: r.Scheme(), Mapper: r.RESTMapper()})
	if err != nil {
		return nil, fmt.Errorf("failed to impersonate %s: %w", user, err)
	}
	if r.engines == nil {
		r.engines = map[string]*apply.Engine{}
	}
	e := apply.New(c)
	r.engines[user] = e
	return e, nil
}

// SetupWithManager registers the reconciler.
func (r *CellSyncReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Namespace == "" {
		return fmt.Errorf("the agent needs the namespace whose CellSyncs it serves")
	}
	inScope := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetNamespace() == r.Namespace })
	workers := r.Workers
	if workers <= 0 {
		workers = 4
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&agentv1alpha1.CellSync{}, builder.WithPredicates(inScope, predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Named("cellsync").
		Complete(r)
}

func revision(branch, commit string) string { return branch + "@sha1:" + commit }

func commitOf(rev string) string {
	if i := strings.LastIndex(rev, "@sha1:"); i >= 0 {
		return rev[i+len("@sha1:"):]
	}
	return ""
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// reportSigner returns the cell's report-signing key, when the CellSync names one. The key is
// parsed once per version of its Secret, not at every heartbeat.
func (r *CellSyncReconciler) reportSigner(ctx context.Context, cs *agentv1alpha1.CellSync, st *syncState) (*openpgp.Entity, error) {
	if cs.Spec.ReportSigning == nil {
		return nil, nil
	}
	s := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: cs.Namespace, Name: cs.Spec.ReportSigning.SecretRef.Name}, s); err != nil {
		return nil, fmt.Errorf("failed to read the report signing Secret %q: %w", cs.Spec.ReportSigning.SecretRef.Name, err)
	}
	version := string(s.UID) + "/" + s.ResourceVersion
	if st.signer != nil && st.signerFor == version {
		return st.signer, nil
	}
	signer, err := gitauth.SignerFromSecret(s)
	if err != nil {
		return nil, err
	}
	st.signer, st.signerFor = signer, version
	return signer, nil
}
