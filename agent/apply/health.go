package apply

import (
	"context"
	"fmt"
	"sort"
	"time"

	kstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
)

// Health of one applied workload.
type Health struct {
	// App and AppNamespace name the hub app, from the labels the hub renders.
	App          string
	AppNamespace string
	Namespace    string
	Name         string
	Kind         string
	// Ready is true when healthy; false when failed or still progressing at the deadline.
	Ready bool
	// Failed is true when the object reports a failure (not just slowness).
	Failed  bool
	Reason  string
	Message string
	// Knative only: the revisions and the traffic split the Service reports.
	LatestReadyRevision   string
	LatestCreatedRevision string
	Traffic               []Traffic
}

// Traffic is one entry of a Knative Service's observed traffic.
type Traffic struct {
	RevisionName string `json:"revisionName"`
	Percent      int64  `json:"percent"`
	Tag          string `json:"tag,omitempty"`
}

// isWorkload picks the objects whose health is worth reporting and waiting for.
func isWorkload(u *unstructured.Unstructured) bool {
	gvk := u.GroupVersionKind()
	switch {
	case gvk.Group == "serving.knative.dev" && gvk.Kind == "Service":
		return true
	case gvk.Group == "apps" && (gvk.Kind == "Deployment" || gvk.Kind == "StatefulSet" || gvk.Kind == "DaemonSet"):
		return true
	}
	return false
}

// WaitForHealth polls the workloads among objs until each is ready or failed, or the timeout
// passes, and returns their health sorted by namespace and name.
func WaitForHealth(ctx context.Context, c client.Reader, objs []*unstructured.Unstructured, timeout, interval time.Duration) []Health {
	deadline := time.Now().Add(timeout)
	var out []Health
	for {
		out = out[:0]
		pending := 0
		for _, u := range objs {
			if !isWorkload(u) {
				continue
			}
			h := Check(ctx, c, u)
			if !h.Ready && !h.Failed {
				pending++
			}
			out = append(out, h)
		}
		if pending == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Check reads one workload's health now.
func Check(ctx context.Context, c client.Reader, desired *unstructured.Unstructured) Health {
	h := Health{
		App: desired.GetLabels()[agentv1alpha1.LabelApp], AppNamespace: desired.GetLabels()[agentv1alpha1.LabelAppNamespace],
		Namespace: desired.GetNamespace(), Name: desired.GetName(), Kind: desired.GetKind(),
	}
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(desired.GroupVersionKind())
	if err := c.Get(ctx, client.ObjectKeyFromObject(desired), live); err != nil {
		h.Reason, h.Message = "NotFound", err.Error()
		if !apierrors.IsNotFound(err) {
			h.Reason = "Unknown"
		}
		return h
	}
	if live.GroupVersionKind().Group == "serving.knative.dev" {
		return knativeHealth(h, live)
	}
	res, err := kstatus.Compute(live)
	if err != nil {
		h.Reason, h.Message = "Unknown", err.Error()
		return h
	}
	h.Ready = res.Status == kstatus.CurrentStatus
	h.Failed = res.Status == kstatus.FailedStatus
	h.Reason, h.Message = string(res.Status), res.Message
	return h
}

// knativeHealth reads a Knative Service as Knative defines it: Ready once the controller has seen
// this generation and says Ready=True; failed on Ready=False (RevisionFailed and friends).
func knativeHealth(h Health, live *unstructured.Unstructured) Health {
	st, _, _ := unstructured.NestedMap(live.Object, "status")
	h.LatestReadyRevision, _ = st["latestReadyRevisionName"].(string)
	h.LatestCreatedRevision, _ = st["latestCreatedRevisionName"].(string)
	if traffic, ok := st["traffic"].([]any); ok {
		for _, t := range traffic {
			m, _ := t.(map[string]any)
			tr := Traffic{}
			tr.RevisionName, _ = m["revisionName"].(string)
			tr.Tag, _ = m["tag"].(string)
			switch p := m["percent"].(type) {
			case int64:
				tr.Percent = p
			case float64:
				tr.Percent = int64(p)
			}
			h.Traffic = append(h.Traffic, tr)
		}
	}
	observed, _, _ := unstructured.NestedInt64(live.Object, "status", "observedGeneration")
	if observed < live.GetGeneration() {
		h.Reason, h.Message = "Progressing", fmt.Sprintf("Knative has not observed generation %d yet", live.GetGeneration())
		return h
	}
	conds, _, _ := unstructured.NestedSlice(live.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != "Ready" {
			continue
		}
		h.Reason, _ = m["reason"].(string)
		h.Message, _ = m["message"].(string)
		switch m["status"] {
		case "True":
			h.Ready = true
			if h.Reason == "" {
				h.Reason = "Ready"
			}
		case "False":
			h.Failed = true
		}
		return h
	}
	h.Reason, h.Message = "Progressing", "Knative has not reported Ready yet"
	return h
}
