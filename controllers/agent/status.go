package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/go-git/go-git/v5/plumbing/transport"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/yaml"

	"github.com/cellsync/cellsync/agent/apply"
	"github.com/cellsync/cellsync/agent/source"
	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	"github.com/cellsync/cellsync/controllers/outcome"
)

// healthOutcome sets the Healthy condition and says what the health means for Ready.
func healthOutcome(cs *agentv1alpha1.CellSync, health []apply.Health, commit string) outcome.Outcome {
	var failed, pending []string
	for _, h := range health {
		name := fmt.Sprintf("%s %s/%s", h.Kind, h.Namespace, h.Name)
		switch {
		case h.Failed:
			failed = append(failed, fmt.Sprintf("%s: %s", name, firstNonEmpty(h.Message, h.Reason)))
		case !h.Ready:
			pending = append(pending, fmt.Sprintf("%s: %s", name, firstNonEmpty(h.Message, h.Reason)))
		}
	}
	applied := fmt.Sprintf("Applied revision %s", revision(cs.BranchName(), commit))
	switch {
	case len(failed) > 0:
		msg := "Health check failed: " + strings.Join(failed, "; ")
		conditions.MarkFalse(cs, HealthyCondition, meta.HealthCheckFailedReason, "%s", msg)
		return outcome.Outcome{Kind: outcome.Failed, Reason: meta.HealthCheckFailedReason, Message: applied + "; " + msg}
	case len(pending) > 0:
		msg := "Waiting for " + strings.Join(pending, "; ")
		conditions.MarkUnknown(cs, HealthyCondition, meta.ProgressingReason, "%s", msg)
		return outcome.Outcome{Kind: outcome.Waiting, Reason: meta.ProgressingReason, Message: applied + "; " + msg}
	default:
		conditions.MarkTrue(cs, HealthyCondition, meta.SucceededReason, "%d workloads healthy", len(health))
		return outcome.Outcome{Kind: outcome.Succeeded, Reason: meta.ReconciliationSucceededReason, Message: applied}
	}
}

// worst keeps a source problem (Git down, unsigned head) over a healthy apply of the last good
// commit: Ready must say that the branch head is not what runs.
func worst(problem *outcome.Outcome, o outcome.Outcome) outcome.Outcome {
	if problem != nil {
		return *problem
	}
	return o
}

// report writes the StatusReport to status/<cell> when it changed or the heartbeat is due.
// A failed push is logged and tried again on the next wake-up; it never fails the reconcile.
func (r *CellSyncReconciler) report(ctx context.Context, cs *agentv1alpha1.CellSync, st *syncState, auth transport.AuthMethod) {
	if st.repo == nil {
		return
	}
	rep := buildReport(cs, st.health, r.Version)
	rep.Refusal = st.refusal
	rep.Analyses = st.analysisReports()
	body, err := yaml.Marshal(rep)
	if err != nil {
		return
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	now := r.now()
	if hash == st.reportHash && now.Sub(st.reportAt) < cs.HeartbeatOrDefault() {
		return
	}
	signer, err := r.reportSigner(ctx, cs, st)
	if err != nil {
		// An unsigned report would be ignored by a hub that expects signatures: say so instead.
		ctrl.LoggerFrom(ctx).Info("Not pushing the status report: the signing key cannot be read", "error", err.Error())
		r.Recorder.Eventf(cs, corev1.EventTypeWarning, agentv1alpha1.ReasonReportKeyInvalid, "Status report not pushed: %s", err)
		return
	}
	url := cs.StatusURLOrDefault()
	if url != cs.Spec.URL {
		// A status repository of its own may take other credentials (an SSH key for ssh://).
		if auth, err = r.authFor(ctx, cs, url); err != nil {
			ctrl.LoggerFrom(ctx).Info("Not pushing the status report: no credentials for spec.statusURL", "error", err.Error())
			return
		}
	}
	rep.HeartbeatTime = metav1.NewTime(now.UTC().Truncate(time.Second))
	body, _ = yaml.Marshal(rep)
	if st.reporter == nil || st.reporter.URL != url || st.reporter.Branch != cs.StatusBranch() {
		st.reporter = &source.Reporter{URL: url, Branch: cs.StatusBranch(), File: agentv1alpha1.StatusReportFile}
	}
	if _, err := st.reporter.Push(ctx, auth, body, now, signer); err != nil {
		ctrl.LoggerFrom(ctx).Info("Failed to push the status report; retrying on the next wake-up", "error", err.Error())
		return
	}
	st.reportHash, st.reportAt = hash, now
	t := rep.HeartbeatTime
	cs.Status.LastReportTime = &t
}

// buildReport is the report without its heartbeat time, so that two reports of the same state
// compare equal.
func buildReport(cs *agentv1alpha1.CellSync, health []apply.Health, version string) *agentv1alpha1.StatusReport {
	rep := &agentv1alpha1.StatusReport{
		APIVersion:      agentv1alpha1.GroupVersion.String(),
		Kind:            agentv1alpha1.StatusReportKind,
		Cell:            cs.Spec.Cell,
		AgentVersion:    version,
		AppliedCommit:   commitOf(cs.Status.LastAppliedRevision),
		AttemptedCommit: commitOf(cs.Status.LastAttemptedRevision),
	}
	for _, c := range cs.Status.Conditions {
		c.LastTransitionTime = metav1.Time{}
		c.ObservedGeneration = 0
		rep.Conditions = append(rep.Conditions, c)
	}
	for _, h := range health {
		a := agentv1alpha1.AppReport{
			App: h.App, AppNamespace: h.AppNamespace, Namespace: h.Namespace, Name: h.Name, Kind: h.Kind,
			Ready: h.Ready, Failed: h.Failed, Reason: h.Reason, Message: h.Message,
			LatestReadyRevision: h.LatestReadyRevision, LatestCreatedRevision: h.LatestCreatedRevision,
		}
		for _, t := range h.Traffic {
			a.Traffic = append(a.Traffic, agentv1alpha1.TrafficReport{RevisionName: t.RevisionName, Percent: t.Percent, Tag: t.Tag})
		}
		rep.Apps = append(rep.Apps, a)
	}
	return rep
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
