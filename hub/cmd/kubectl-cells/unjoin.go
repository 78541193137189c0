package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentv1alpha1 "github.com/cellsync/cellsync/api/agent/v1alpha1"
	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

type unjoinOptions struct {
	hubKubeconfig, hubContext string
	agentNamespace            string
	dryRun                    bool
	timeout                   time.Duration
}

func newUnjoinCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := unjoinOptions{}
	cmd := &cobra.Command{
		Use:   "unjoin CELL",
		Short: "Remove what join made for CELL",
		Long: `unjoin removes what join made for CELL: the Cell on the hub (--hub-kubeconfig), the
CellSync (the agent then prunes what it applied for the cell), the cell's ServiceAccount,
RoleBindings and Secrets. When no CellSync is left and join installed the agent, the agent goes
too; its CRDs and namespace stay (deleting a CRD deletes every object of its kind).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUnjoin(ctxOf(cmd), flags, args[0], o, streams.Out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.hubKubeconfig, "hub-kubeconfig", "", "Kubeconfig of the hub, to delete the Cell there.")
	f.StringVar(&o.hubContext, "hub-context", "", "Context in --hub-kubeconfig.")
	f.StringVar(&o.agentNamespace, "agent-namespace", "cellsync-system", "Namespace of the agent in this cluster.")
	f.BoolVar(&o.dryRun, "dry-run", false, "Print what unjoin would delete, and delete nothing.")
	f.DurationVar(&o.timeout, "timeout", 2*time.Minute, "How long to wait for the agent to prune the cell's objects.")
	return cmd
}

func runUnjoin(ctx context.Context, flags *genericclioptions.ConfigFlags, cell string, o unjoinOptions, out io.Writer) error {
	member, hub, err := connectBoth(flags, o.hubKubeconfig, o.hubContext)
	if err != nil {
		return err
	}
	del := func(c *cluster, u client.Object, what string) error {
		if o.dryRun {
			fmt.Fprintf(out, "%s: would delete %s\n", c.role, what)
			return nil
		}
		err := c.client.Delete(ctx, u)
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("%s cluster at %s: cannot delete %s: %w", c.role, c.host, what, err)
		}
		fmt.Fprintf(out, "%s: %s deleted\n", c.role, what)
		return nil
	}
	if hub != nil {
		c := &hubv1alpha1.Cell{}
		err := hub.client.Get(ctx, client.ObjectKey{Name: cell}, c)
		switch {
		case err == nil && c.Labels[labelManagedBy] != fieldOwner:
			fmt.Fprintf(out, "hub: cell/%s was not made by join (it comes from Git or by hand): remove it there\n", cell)
		case err == nil:
			if err := del(hub, c, "cell.hub.cellsync.io/"+cell); err != nil {
				return err
			}
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("cannot read Cell %s on the hub at %s: %w", cell, hub.host, err)
		}
	} else {
		fmt.Fprintf(out, "No --hub-kubeconfig: remove Cell %s from the hub (or from main) yourself.\n", cell)
	}

	ns := o.agentNamespace
	cs := &agentv1alpha1.CellSync{}
	err = member.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: cell}, cs)
	switch {
	case err == nil:
		if err := del(member, cs, fmt.Sprintf("cellsync.agent.cellsync.io/%s (namespace %s)", cell, ns)); err != nil {
			return err
		}
		if !o.dryRun {
			if err := waitGone(ctx, member, cs, o.timeout); err != nil {
				return err
			}
		}
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("cannot read CellSync %s/%s in the member cluster at %s: %w", ns, cell, member.host, err)
	}
	sel := client.MatchingLabels{labelManagedBy: fieldOwner, labelCell: cell}
	rbs := &unstructured.UnstructuredList{}
	rbs.SetAPIVersion("rbac.authorization.k8s.io/v1")
	rbs.SetKind("RoleBindingList")
	if err := member.client.List(ctx, rbs, sel); err != nil {
		return fmt.Errorf("cannot list the cell's RoleBindings in the member cluster at %s: %w", member.host, err)
	}
	for i := range rbs.Items {
		if err := del(member, &rbs.Items[i], describe(&rbs.Items[i])); err != nil {
			return err
		}
	}
	for kind, list := range map[string]client.ObjectList{"secret": &corev1.SecretList{}, "serviceaccount": &corev1.ServiceAccountList{}} {
		if err := member.client.List(ctx, list, sel, client.InNamespace(ns)); err != nil {
			return fmt.Errorf("cannot list the cell's objects in the member cluster at %s: %w", member.host, err)
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return err
		}
		for _, it := range items {
			o := it.(client.Object)
			if err := del(member, o, fmt.Sprintf("%s/%s (namespace %s)", kind, o.GetName(), ns)); err != nil {
				return err
			}
		}
	}
	return removeAgentIfUnused(ctx, member, ns, o.dryRun, del, out)
}

// removeAgentIfUnused deletes the agent install when join made it and no CellSync is left. The
// CRDs and the namespace stay.
func removeAgentIfUnused(ctx context.Context, member *cluster, ns string, dryRun bool, del func(*cluster, client.Object, string) error, out io.Writer) error {
	left := &agentv1alpha1.CellSyncList{}
	if err := member.client.List(ctx, left, client.InNamespace(ns)); err != nil {
		if isNoMatch(err) {
			return nil
		}
		return fmt.Errorf("cannot list CellSyncs in the member cluster at %s: %w", member.host, err)
	}
	if dryRun {
		fmt.Fprintln(out, "member: the agent goes too if join installed it and no other CellSync is left")
		return nil
	}
	if len(left.Items) > 0 {
		return nil
	}
	objs, err := agentObjects(ns, "")
	if err != nil {
		return err
	}
	for i := len(objs) - 1; i >= 0; i-- {
		u := objs[i]
		if u.GetKind() == "CustomResourceDefinition" || u.GetKind() == "Namespace" {
			continue
		}
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(u.GroupVersionKind())
		if err := member.client.Get(ctx, client.ObjectKeyFromObject(u), live); err != nil {
			continue
		}
		if live.GetLabels()[labelManagedBy] != fieldOwner {
			continue
		}
		if err := del(member, live, describe(live)); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "member: the agent's CRDs and namespace %s stay\n", ns)
	return nil
}

func isNoMatch(err error) bool {
	return apierrors.IsNotFound(err) || meta.IsNoMatchError(err)
}

// waitGone waits until the CellSync's finalizer let it go: the agent pruned the cell's objects.
func waitGone(ctx context.Context, c *cluster, obj client.Object, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CellSync %s/%s is still there after %s: is the agent running? It removes the finalizer after pruning the cell's objects", obj.GetNamespace(), obj.GetName(), timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
