package main

// leaselock status: the locks of a namespace, as a table or as the Leases.

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/resourcelock"
)

type statusOptions struct {
	name  string
	print *genericclioptions.PrintFlags
	clock clock.PassiveClock
}

func newStatusCommand(g *globals) *cobra.Command {
	o := &statusOptions{print: genericclioptions.NewPrintFlags("").WithTypeSetter(scheme.Scheme), clock: clock.RealClock{}}
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show the locks held in the namespace, or the lock NAME",
		Long: `Status shows the locks of the namespace (the Leases that leaselock manages), or
the lock NAME: its holder, how long it has been held, when its lease expires
unless renewed, and how many handoffs to others the holder waited through
before it got the lock. -o wide adds the lease, the takeovers of expired
holders, and the fencing token. -o json and -o yaml print the Leases.

A lock that no one holds has no Lease: status NAME then says so on stderr,
and exits 0.`,
		Example: `  leaselock status
  leaselock status db-migration -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.name = args[0]
			}
			p, err := o.printer()
			if err != nil {
				return err
			}
			return o.run(cmd.Context(), g, p)
		},
	}
	o.print.AddFlags(cmd)
	cmd.Flag("output").Usage = "output format: wide, or one of kubectl's: json, yaml, name, jsonpath=..., go-template=..."
	return cmd
}

// printer returns the printer of -o, nil for the table, after checking the
// name: all before any request.
func (o *statusOptions) printer() (printers.ResourcePrinter, error) {
	if o.name != "" {
		if err := resourcelock.ValidateLockName(o.name); err != nil {
			return nil, err
		}
	}
	if f := *o.print.OutputFormat; f == "" || f == "wide" {
		return nil, nil
	}
	return o.print.ToPrinter()
}

// run reads the locks and prints them with p, or as a table when p is nil.
func (o *statusOptions) run(ctx context.Context, g *globals, p printers.ResourcePrinter) error {
	c, ns, err := leaseClient(g)
	if err != nil {
		return err
	}
	leases, err := o.read(ctx, c, ns)
	if err != nil {
		return err
	}
	if len(leases) == 0 {
		if o.name != "" {
			fmt.Fprintf(g.streams.ErrOut, "lock %s is free in namespace %s\n", o.name, ns)
			return nil
		}
		fmt.Fprintf(g.streams.ErrOut, "No locks held in namespace %s.\n", ns)
		if p == nil {
			return nil
		}
	}
	if p == nil {
		table := o.table(leases, *o.print.OutputFormat == "wide")
		return printers.NewTablePrinter(printers.PrintOptions{Wide: true}).PrintObj(table, g.streams.Out)
	}
	if o.name != "" {
		return p.PrintObj(&leases[0], g.streams.Out)
	}
	return p.PrintObj(asList(leases), g.streams.Out)
}

// read returns the lock name's Lease, or every Lease of the namespace that
// leaselock manages, by name; none for a free lock.
func (o *statusOptions) read(ctx context.Context, c client.Client, ns string) ([]coordinationv1.Lease, error) {
	if o.name != "" {
		lease, err := getLease(ctx, c, ns, o.name)
		if lease == nil || err != nil {
			return nil, err
		}
		return []coordinationv1.Lease{*lease}, nil
	}
	var list coordinationv1.LeaseList
	if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{resourcelock.ManagedByLabel: managedBy}); err != nil {
		return nil, fmt.Errorf("list the locks of namespace %s: %w", ns, err)
	}
	slices.SortFunc(list.Items, func(a, b coordinationv1.Lease) int { return cmp.Compare(a.Name, b.Name) })
	return list.Items, nil
}

// The table's columns; wide adds the last three.
var columns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string"},
	{Name: "Holder", Type: "string"},
	{Name: "Held For", Type: "string", Description: "since the holder acquired the lock"},
	{Name: "Expires In", Type: "string", Description: "when the lease runs out unless renewed"},
	{Name: "Handoffs", Type: "integer", Description: "handoffs to others the holder waited through"},
	{Name: "Lease", Type: "string", Priority: 1},
	{Name: "Takeovers", Type: "integer", Description: "holders that took the lock over after it expired", Priority: 1},
	{Name: "Token", Type: "string", Description: "the fencing token of the last write", Priority: 1},
}

// table makes the rows of leases.
func (o *statusOptions) table(leases []coordinationv1.Lease, wide bool) *metav1.Table {
	now := o.clock.Now()
	t := &metav1.Table{ColumnDefinitions: columns}
	if !wide {
		t.ColumnDefinitions = slices.DeleteFunc(slices.Clone(columns), func(c metav1.TableColumnDefinition) bool { return c.Priority > 0 })
	}
	for i := range leases {
		l := &leases[i]
		cells := []any{l.Name, ptr.Deref(l.Spec.HolderIdentity, "<none>"), heldFor(l, now), expiresIn(l, now), handoffs(l)}
		if wide {
			lease := time.Duration(ptr.Deref(l.Spec.LeaseDurationSeconds, 0)) * time.Second
			cells = append(cells, lease.String(), ptr.Deref(l.Spec.LeaseTransitions, 0), l.ResourceVersion)
		}
		t.Rows = append(t.Rows, metav1.TableRow{Cells: cells, Object: runtime.RawExtension{Object: l}})
	}
	return t
}

// heldFor is how long ago the holder acquired l.
func heldFor(l *coordinationv1.Lease, now time.Time) string {
	if l.Spec.AcquireTime == nil {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(l.Spec.AcquireTime.Time))
}

// expiresIn is how long l's lease runs unless renewed, by the holder's
// times and this machine's clock.
func expiresIn(l *coordinationv1.Lease, now time.Time) string {
	since := l.Spec.RenewTime
	if since == nil {
		since = l.Spec.AcquireTime
	}
	if since == nil || l.Spec.LeaseDurationSeconds == nil {
		return "<unknown>"
	}
	left := since.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second).Sub(now)
	if left < 0 {
		return "expired " + duration.HumanDuration(-left) + " ago"
	}
	return duration.HumanDuration(left)
}

// handoffs is the handoffs the holder of l waited through, -1 when l does
// not say.
func handoffs(l *coordinationv1.Lease) int64 {
	n, err := strconv.ParseInt(l.Annotations[resourcelock.HandoffsAnnotation], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// asList is leases as kubectl prints a list: a v1 List of Leases, each
// with its kind.
func asList(leases []coordinationv1.Lease) *corev1.List {
	list := &corev1.List{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "List"}}
	for i := range leases {
		l := leases[i].DeepCopy()
		l.SetGroupVersionKind(coordinationv1.SchemeGroupVersion.WithKind("Lease"))
		list.Items = append(list.Items, runtime.RawExtension{Object: l})
	}
	return list
}
