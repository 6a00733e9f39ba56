package main

// The root command: kubectl's flags for connecting, the log, and the
// subcommands.

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// globals are the root command's flags, which every subcommand has, and
// the streams it writes to.
type globals struct {
	streams genericiooptions.IOStreams
	// kube is kubectl's flags for connecting: --kubeconfig, --context,
	// -n/--namespace and the rest.
	kube *genericclioptions.ConfigFlags
	// verbosity is -v: 0 logs errors only.
	verbosity int
}

func newRootCommand(name string, streams genericiooptions.IOStreams) *cobra.Command {
	g := &globals{streams: streams, kube: genericclioptions.NewConfigFlags(true)}
	root := &cobra.Command{
		Use:   "leaselock",
		Short: "Run a command under a distributed lock held in a Kubernetes Lease",
		Long: `leaselock runs a command under a lock held in a coordination.k8s.io/v1 Lease,
so that one process at a time runs it, across Pods, nodes and clusters that
share an API server. The lock is renewed while the command runs and released
when it exits.`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: name},
		SilenceErrors: true,
		SilenceUsage:  true,
		// A subcommand is needed.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	g.kube.AddFlags(root.PersistentFlags())
	root.PersistentFlags().IntVarP(&g.verbosity, "v", "v", 0, "log level: 0 logs errors only, 1 the library's notices, 2 each lock taken and released, higher more")
	root.PersistentPreRun = func(*cobra.Command, []string) {
		// controller-runtime's packages log through its log.Log: to
		// stderr, as the rest.
		ctrllog.SetLogger(g.logger())
	}
	root.AddCommand(newRunCommand(g), newStatusCommand(g), newUnlockCommand(g))
	return root
}
