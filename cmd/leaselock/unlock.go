package main

// leaselock unlock: the forced removal of a stuck lock, with a
// precondition on the holder it shows.

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/resourcelock"
)

var errNoForce = errors.New("unlock takes a lock from a holder that may still run: pass --force to do it")

type unlockOptions struct {
	name   string
	force  bool
	holder string
}

func newUnlockCommand(g *globals) *cobra.Command {
	o := &unlockOptions{}
	cmd := &cobra.Command{
		Use:   "unlock NAME --force [--holder ID]",
		Short: "Delete the lock NAME, whoever holds it",
		Long: `Unlock deletes the Lease of the lock NAME, for a lock whose holder is gone and
whose lease is long. A holder that still runs loses the lock: its next renewal
finds it gone, and a leaselock run then stops its command.

Unlock shows the holder on stderr, and deletes the lock only while that holder
has it (with --holder, only while ID has it): a lock that changed hands since
is left alone, and unlock exits 1. A free lock is left alone, with exit 0, and
so is a Lease that leaselock does not manage (a leader election's), with exit 1.`,
		Example: `  leaselock status db-migration
  leaselock unlock db-migration --force --holder migrate-7d9f_0c4e...`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name = args[0]
			if err := o.validate(); err != nil {
				return err
			}
			c, ns, err := leaseClient(g)
			if err != nil {
				return err
			}
			return o.run(cmd.Context(), g, c, ns)
		},
	}
	cmd.Flags().BoolVar(&o.force, "force", false, "delete the lock even though its holder may still run (required)")
	cmd.Flags().StringVar(&o.holder, "holder", "", "delete the lock only while this holder ID has it, as status shows it")
	return cmd
}

func (o *unlockOptions) validate() error {
	if err := resourcelock.ValidateLockName(o.name); err != nil {
		return err
	}
	if !o.force {
		return errNoForce
	}
	return nil
}

// run deletes the lock's Lease while the holder it read first has it.
func (o *unlockOptions) run(ctx context.Context, g *globals, c client.Client, ns string) error {
	lock := ns + "/" + o.name
	lease, err := getLease(ctx, c, ns, o.name)
	if err != nil {
		return err
	}
	if lease == nil {
		fmt.Fprintf(g.streams.ErrOut, "lock %s is free: nothing to unlock\n", lock)
		return nil
	}
	if by := lease.Labels[resourcelock.ManagedByLabel]; by != managedBy {
		return fmt.Errorf("the Lease of %s is not a leaselock lock (%s=%q): not deleted", lock, resourcelock.ManagedByLabel, by)
	}
	shown := ptr.Deref(lease.Spec.HolderIdentity, "")
	if o.holder != "" && shown != o.holder {
		return fmt.Errorf("lock %s is held by %q, not %q: not deleted", lock, shown, o.holder)
	}
	fmt.Fprintf(g.streams.ErrOut, "deleting lock %s held by %q\n", lock, shown)
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var err error
		lease, err = deleteHeld(ctx, c, lease, shown)
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		fmt.Fprintf(g.streams.ErrOut, "lock %s was released meanwhile: nothing to unlock\n", lock)
		return nil
	case err != nil:
		return fmt.Errorf("lock %s: %w", lock, err)
	}
	fmt.Fprintf(g.streams.Out, "lock %s unlocked (was held by %q)\n", lock, shown)
	return nil
}

// deleteHeld deletes lease as read, with preconditions on its UID and
// resourceVersion. On a Conflict it reads the Lease again and returns it
// with the Conflict, to be retried, while holder still has it (a renewal
// changed it); otherwise it returns an error that no retry can change.
func deleteHeld(ctx context.Context, c client.Client, lease *coordinationv1.Lease, holder string) (*coordinationv1.Lease, error) {
	err := c.Delete(ctx, lease, client.Preconditions{UID: &lease.UID, ResourceVersion: &lease.ResourceVersion})
	if !apierrors.IsConflict(err) {
		return lease, err
	}
	now, gerr := getLease(ctx, c, lease.Namespace, lease.Name)
	switch {
	case gerr != nil:
		return lease, gerr
	case now == nil:
		return lease, apierrors.NewNotFound(coordinationv1.Resource("leases"), lease.Name)
	case now.UID != lease.UID || ptr.Deref(now.Spec.HolderIdentity, "") != holder:
		return lease, fmt.Errorf("changed hands since it was read: now held by %q, not deleted", ptr.Deref(now.Spec.HolderIdentity, ""))
	}
	return now, err
}
