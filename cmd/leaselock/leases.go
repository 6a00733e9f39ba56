package main

// The Lease requests of status and unlock.

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// managedBy is the value of resourcelock.ManagedByLabel on the Leases of
// leaselock's locks.
const managedBy = "leaselock"

// leaseClient returns a client for the Leases of the locks' namespace, and
// the namespace.
func leaseClient(g *globals) (client.Client, string, error) {
	cfg, ns, err := g.target()
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return nil, "", fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	return c, ns, nil
}

// getLease reads the Lease of lock name; a free lock's is (nil, nil).
func getLease(ctx context.Context, c client.Client, ns, name string) (*coordinationv1.Lease, error) {
	lease := &coordinationv1.Lease{}
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, lease)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read lock %s/%s: %w", ns, name, err)
	}
	return lease, nil
}
