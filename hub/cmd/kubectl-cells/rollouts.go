package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

func getRollouts(ctx context.Context, c client.Client, ns string, watch bool, out io.Writer) error {
	printed := map[string]string{}
	header := true
	for {
		list := &hubv1alpha1.RolloutList{}
		if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
			return fmt.Errorf("cannot list rollouts (is the cellsync hub installed?): %w", err)
		}
		sort.Slice(list.Items, func(i, j int) bool {
			return list.Items[i].Namespace+"/"+list.Items[i].Name < list.Items[j].Namespace+"/"+list.Items[j].Name
		})
		w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
		if header {
			if ns == "" {
				fmt.Fprint(w, "NAMESPACE\t")
			}
			fmt.Fprintln(w, "NAME\tAPP\tSTEP\tPHASE\tCANARY%\tCELLS\tANALYSIS\tSTABLE\tCANARY\tAGE")
			header = false
		}
		for _, r := range list.Items {
			row := fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s", r.Name, r.Spec.AppRef.Name, dash(r.Status.StepDisplay), dash(string(r.Status.Phase)),
				r.Status.CanaryWeight, dash(r.Status.CellsDisplay), dash(string(r.Status.Analysis)), dash(r.Status.StableRevision), dash(r.Status.CanaryRevision))
			if ns == "" {
				row = r.Namespace + "\t" + row
			}
			key := r.Namespace + "/" + r.Name
			if printed[key] == row {
				continue
			}
			printed[key] = row
			fmt.Fprintf(w, "%s\t%s\n", row, age(r.CreationTimestamp))
		}
		_ = w.Flush()
		if !watch {
			return nil
		}
		time.Sleep(2 * time.Second)
	}
}

func status(ctx context.Context, c client.Client, ns, name string, out io.Writer) error {
	app := &hubv1alpha1.ServerlessApp{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
		return fmt.Errorf("cannot read ServerlessApp %s/%s: %w", ns, name, err)
	}
	ro := &hubv1alpha1.Rollout{}
	_ = c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ro)
	cells := &hubv1alpha1.CellList{}
	if err := c.List(ctx, cells); err != nil {
		return err
	}
	byName := map[string]*hubv1alpha1.Cell{}
	for i := range cells.Items {
		byName[cells.Items[i].Name] = &cells.Items[i]
	}
	// The heartbeats are in the cells' Leases in the hub's namespace; without the right to read
	// them the column shows "-".
	heartbeats := map[string]time.Time{}
	leases := &coordinationv1.LeaseList{}
	if err := c.List(ctx, leases, client.HasLabels{hubv1alpha1.HeartbeatLeaseLabel}); err == nil {
		for _, l := range leases.Items {
			if l.Spec.RenewTime != nil {
				heartbeats[l.Labels[hubv1alpha1.HeartbeatLeaseLabel]] = l.Spec.RenewTime.Time
			}
		}
	}
	fmt.Fprintf(out, "App %s/%s  revision %s  rollout %s %s  ready in %d of %d cells\n\n", ns, name, dash(app.Status.Revision),
		dash(string(ro.Status.Phase)), dash(ro.Status.StepDisplay), app.Status.ReadyCells, app.Status.CellCount)
	w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, "CELL\tCLUSTER\tREVISION\tTRAFFIC\tREADY\tHEARTBEAT\tMESSAGE")
	for _, s := range app.Status.CellStatuses {
		cluster, heartbeat := "-", "-"
		if cell, ok := byName[s.Cell]; ok {
			cluster = cell.Spec.Cluster
			if hb, ok := heartbeats[cell.Name]; ok {
				heartbeat = duration.HumanDuration(time.Since(hb)) + " ago"
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%s\t%s\n", s.Cell, cluster, dash(s.Revision), dash(s.Traffic), s.Ready, heartbeat, dash(s.Message))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return analyses(ro, out)
}

// analyses prints each cell's analysis of the rollout's current step: every metric's verdict,
// its measurement counts and its last value.
func analyses(ro *hubv1alpha1.Rollout, out io.Writer) error {
	var rows [][]string
	for _, c := range ro.Status.Cells {
		if c.Analysis == nil {
			continue
		}
		if len(c.Analysis.Metrics) == 0 {
			rows = append(rows, []string{c.Cell, "-", string(c.Analysis.Phase), "-", "-", "waiting for the first measurement"})
		}
		for _, m := range c.Analysis.Metrics {
			rows = append(rows, []string{c.Cell, m.Name, string(m.Phase), dash(m.Value),
				fmt.Sprintf("%d/%d/%d", m.Successful, m.Failed, m.Inconclusive), dash(m.Message)})
		}
	}
	if len(rows) == 0 {
		return nil
	}
	fmt.Fprintf(out, "\nAnalysis of step %s: %s\n\n", dash(ro.Status.StepDisplay), dash(string(ro.Status.Analysis)))
	w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, "CELL\tMETRIC\tVERDICT\tVALUE\tPASSED/FAILED/INCONCLUSIVE\tMESSAGE")
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

// actions maps the acting commands to the RolloutStep action they create.
var actions = map[string]hubv1alpha1.RolloutAction{
	"promote": hubv1alpha1.ActionAdvance,
	"pause":   hubv1alpha1.ActionPause,
	"resume":  hubv1alpha1.ActionResume,
	"abort":   hubv1alpha1.ActionAbort,
	"undo":    hubv1alpha1.ActionUndo,
}

// act creates the RolloutStep for a command, after checking that the rollout exists.
func act(ctx context.Context, c client.Client, ns, app, command string, o actOptions, out io.Writer) error {
	ro := &hubv1alpha1.Rollout{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: app}, ro); err != nil {
		return fmt.Errorf("cannot read Rollout %s/%s: %w", ns, app, err)
	}
	action := actions[command]
	if command == "promote" && o.full {
		action = hubv1alpha1.ActionPromote
	}
	reason := o.reason
	if reason == "" {
		reason = "kubectl cells " + command
		if user := os.Getenv("USER"); user != "" {
			reason += " by " + user
		}
	}
	step := &hubv1alpha1.RolloutStep{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: app + "-" + command + "-",
			Labels: map[string]string{hubv1alpha1.LabelRollout: app, hubv1alpha1.LabelCreatedBy: "kubectl-cells"},
			// Owned by the rollout, so that the steps go when the app (and its rollout) goes.
			OwnerReferences: []metav1.OwnerReference{{APIVersion: hubv1alpha1.GroupVersion.String(), Kind: "Rollout", Name: ro.Name, UID: ro.UID}}},
		Spec: hubv1alpha1.RolloutStepSpec{
			RolloutRef: corev1.LocalObjectReference{Name: app},
			Action:     action,
			Reason:     reason,
		},
	}
	if command == "undo" {
		step.Spec.Revision = o.toRevision
	}
	if err := c.Create(ctx, step); err != nil {
		return fmt.Errorf("cannot create a RolloutStep: %w", err)
	}
	fmt.Fprintf(out, "rolloutstep.hub.cellsync.io/%s created (%s %s/%s)\n", step.Name, action, ns, app)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func age(t metav1.Time) string {
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(time.Since(t.Time))
}
