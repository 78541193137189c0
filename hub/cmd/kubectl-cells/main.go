// Command kubectl-cells is the cellsync kubectl plugin: `kubectl cells ...` with the binary on
// PATH. It reads rollouts and apps, and moves rollouts (promote, pause, resume, abort, undo) by
// creating RolloutSteps, never by editing status.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
)

const usage = `kubectl cells: look at and move cellsync rollouts on the hub.

Usage:
  kubectl cells get rollouts [-n NAMESPACE | -A] [-w]   where every rollout stands
  kubectl cells status APP [-n NAMESPACE]               an app's state in each of its cells
  kubectl cells promote APP [--full]                    approve the next step (--full: skip every step)
  kubectl cells pause APP                               stop automatic advances
  kubectl cells resume APP                              let automatic advances go on
  kubectl cells abort APP                               put every touched cell back at its last-known-good commit
  kubectl cells undo APP [--to-revision R]              roll forward to an earlier revision

Each acting command creates a RolloutStep and prints its name; "kubectl get rolloutsteps"
shows what came of it.

Flags (after the command): --kubeconfig, --context, -n/--namespace, -A/--all-namespaces,
-w/--watch, --full, --to-revision, --reason
`

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

type options struct {
	kubeconfig, context, namespace string
	all, watch, full               bool
	toRevision, reason             string
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(out, usage)
		return nil
	}
	var cmd []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = append(cmd, args[0]), args[1:]
	}
	fs := flag.NewFlagSet("kubectl cells", flag.ContinueOnError)
	o := options{}
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "path to the kubeconfig")
	fs.StringVar(&o.context, "context", "", "kubeconfig context")
	fs.StringVar(&o.namespace, "namespace", "", "namespace")
	fs.StringVar(&o.namespace, "n", "", "namespace")
	fs.BoolVar(&o.all, "all-namespaces", false, "all namespaces")
	fs.BoolVar(&o.all, "A", false, "all namespaces")
	fs.BoolVar(&o.watch, "watch", false, "watch for changes")
	fs.BoolVar(&o.watch, "w", false, "watch for changes")
	fs.BoolVar(&o.full, "full", false, "promote: skip every remaining step")
	fs.StringVar(&o.toRevision, "to-revision", "", "undo: the revision to go back to")
	fs.StringVar(&o.reason, "reason", "", "recorded with the step")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cmd = append(cmd, fs.Args()...)
	c, ns, err := connect(o)
	if err != nil {
		return err
	}
	ctx := context.Background()
	switch {
	case len(cmd) == 2 && cmd[0] == "get" && (cmd[1] == "rollouts" || cmd[1] == "rollout" || cmd[1] == "csro"):
		if o.all {
			ns = ""
		}
		return getRollouts(ctx, c, ns, o.watch, out)
	case len(cmd) == 2 && cmd[0] == "status":
		return status(ctx, c, ns, cmd[1], out)
	case len(cmd) == 2 && actions[cmd[0]] != "":
		return act(ctx, c, ns, cmd[1], cmd[0], o, out)
	default:
		return fmt.Errorf("unknown command %q\n\n%s", strings.Join(cmd, " "), usage)
	}
}

func connect(o options) (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cfg := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.context})
	rest, err := cfg.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("cannot load the kubeconfig: %w", err)
	}
	ns := o.namespace
	if ns == "" {
		if ns, _, err = cfg.Namespace(); err != nil {
			return nil, "", err
		}
	}
	scheme := runtime.NewScheme()
	_ = hubv1alpha1.AddToScheme(scheme)
	c, err := client.New(rest, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", err
	}
	return c, ns, nil
}

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
			fmt.Fprintln(w, "NAME\tAPP\tSTEP\tPHASE\tCANARY%\tCELLS\tSTABLE\tCANARY\tAGE")
			header = false
		}
		for _, r := range list.Items {
			row := fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s", r.Name, r.Spec.AppRef.Name, dash(r.Status.StepDisplay), dash(string(r.Status.Phase)),
				r.Status.CanaryWeight, dash(r.Status.CellsDisplay), dash(r.Status.StableRevision), dash(r.Status.CanaryRevision))
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
	fmt.Fprintf(out, "App %s/%s  revision %s  rollout %s %s  ready in %d of %d cells\n\n", ns, name, dash(app.Status.Revision),
		dash(string(ro.Status.Phase)), dash(ro.Status.StepDisplay), app.Status.ReadyCells, app.Status.CellCount)
	w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, "CELL\tCLUSTER\tREVISION\tTRAFFIC\tREADY\tHEARTBEAT\tMESSAGE")
	for _, s := range app.Status.CellStatuses {
		cluster, heartbeat := "-", "-"
		if cell, ok := byName[s.Cell]; ok {
			cluster = cell.Spec.Cluster
			if hb := cell.Status.LastHeartbeatTime; hb != nil {
				heartbeat = duration.HumanDuration(time.Since(hb.Time)) + " ago"
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%s\t%s\n", s.Cell, cluster, dash(s.Revision), dash(s.Traffic), s.Ready, heartbeat, dash(s.Message))
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
func act(ctx context.Context, c client.Client, ns, app, command string, o options, out io.Writer) error {
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
