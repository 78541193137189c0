// Command kubectl-cells is the cellsync kubectl plugin: `kubectl cells ...` with the binary on
// PATH. It reads rollouts and apps, moves rollouts (promote, pause, resume, abort, undo) by
// creating RolloutSteps, never by editing status, and joins member clusters to the fleet.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hubv1alpha1 "github.com/cellsync/cellsync/api/hub/v1alpha1"
	"github.com/cellsync/cellsync/controllers/version"
)

func main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	if err := newRootCommand(streams).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// newRootCommand is `kubectl cells` with every kubeconfig flag kubectl has (--kubeconfig,
// --context, -n, --server, --token, ...) accepted before or after the command.
func newRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	flags := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		Use:   "kubectl-cells",
		Short: "Look at and move cellsync rollouts on the hub; join member clusters",
		Long: `kubectl cells: look at and move cellsync rollouts on the hub, and join member clusters.

Each acting command (promote, pause, resume, abort, undo) creates a RolloutStep and prints its
name; "kubectl get rolloutsteps" shows what came of it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get().String(),
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl cells"},
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetVersionTemplate("kubectl-cells {{.Version}}\n")
	flags.AddFlags(root.PersistentFlags())
	hub := func() (client.Client, string, error) { return connect(flags) }
	root.AddCommand(
		newGetCommand(hub, streams.Out),
		newStatusCommand(hub, streams.Out),
		newJoinCommand(flags, streams),
		newUnjoinCommand(flags, streams),
		&cobra.Command{
			Use:   "version",
			Short: "Print the plugin's version",
			Args:  cobra.NoArgs,
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintln(cmd.OutOrStdout(), "kubectl-cells", version.Get())
			},
		},
	)
	for _, name := range []string{"promote", "pause", "resume", "abort", "undo"} {
		root.AddCommand(newActCommand(name, hub, streams.Out))
	}
	return root
}

// connect is a client of the cluster the kubeconfig flags name (the hub for the rollout
// commands) and the namespace to use.
func connect(flags *genericclioptions.ConfigFlags) (client.Client, string, error) {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, "", fmt.Errorf("cannot load the kubeconfig: %w", err)
	}
	ns, _, err := flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", err
	}
	scheme := runtime.NewScheme()
	_ = hubv1alpha1.AddToScheme(scheme)
	_ = coordinationv1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", err
	}
	return c, ns, nil
}

type hubClient func() (client.Client, string, error)

func newGetCommand(hub hubClient, out io.Writer) *cobra.Command {
	var all, watch bool
	get := &cobra.Command{Use: "get", Short: "List cellsync objects"}
	rollouts := &cobra.Command{
		Use:     "rollouts",
		Aliases: []string{"rollout", "csro"},
		Short:   "Where every rollout stands",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ns, err := hub()
			if err != nil {
				return err
			}
			if all {
				ns = ""
			}
			return getRollouts(ctxOf(cmd), c, ns, watch, out)
		},
	}
	rollouts.Flags().BoolVarP(&all, "all-namespaces", "A", false, "List the rollouts of every namespace.")
	rollouts.Flags().BoolVarP(&watch, "watch", "w", false, "Print a line whenever a rollout changes.")
	get.AddCommand(rollouts)
	return get
}

func newStatusCommand(hub hubClient, out io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "status APP",
		Short: "An app's state in each of its cells",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := hub()
			if err != nil {
				return err
			}
			return status(ctxOf(cmd), c, ns, args[0], out)
		},
	}
}

type actOptions struct {
	full               bool
	toRevision, reason string
}

var actHelp = map[string]string{
	"promote": "Approve the next step (--full: skip every remaining step)",
	"pause":   "Stop automatic advances",
	"resume":  "Let automatic advances go on",
	"abort":   "Put every touched cell back at its last-known-good commit",
	"undo":    "Roll forward to an earlier revision",
}

func newActCommand(name string, hub hubClient, out io.Writer) *cobra.Command {
	o := actOptions{}
	cmd := &cobra.Command{
		Use:   name + " APP",
		Short: actHelp[name],
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := hub()
			if err != nil {
				return err
			}
			return act(ctxOf(cmd), c, ns, args[0], name, o, out)
		},
	}
	cmd.Flags().StringVar(&o.reason, "reason", "", "Recorded with the step.")
	switch name {
	case "promote":
		cmd.Flags().BoolVar(&o.full, "full", false, "Skip every remaining step.")
	case "undo":
		cmd.Flags().StringVar(&o.toRevision, "to-revision", "", "The revision to go back to (default: the previous one).")
	}
	return cmd
}

func ctxOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
