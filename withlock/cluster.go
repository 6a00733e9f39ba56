package withlock

// NewForCluster: a Locker wired from a controller-runtime cluster or
// manager, as a user of one would want it without being told.

import (
	"errors"
	"fmt"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/leaselock/leaselock/internal/nilness"
)

var errNilCluster = errors.New("withlock: cluster is nil")

// NewForCluster returns a Locker for the Leases of namespace in cl (a
// manager.Manager is a cluster.Cluster), wired as a controller-runtime
// user would want it:
//
//   - Its Leases go through a client of their own, built from cl's config,
//     HTTP client (so it shares cl's connections) and REST mapper, that
//     reads them uncached and watches them: waiters wake as soon as a lock
//     is released, and send no request while they wait. A manager's
//     GetClient() cannot watch, and reads from an informer of Leases in
//     every namespace, which the least Role (examples/rbac.yaml) may not
//     list, so that it never syncs.
//   - That client uses cl's scheme when it knows Leases, else a scheme of
//     its own: cl's need not register them.
//   - It logs through the manager's GetLogger() (controller-runtime's
//     log.Log for a cluster that has none), unless WithLogger says
//     otherwise, and gives that logger to its ResourceLocker.
//   - Update reads through cl.GetAPIReader(), unless ReadFrom says
//     otherwise.
//   - It removes the Leases of this library that stayed expired in
//     namespace (see WithLeftoverRemoval), which needs list on Leases.
//   - It asks the server's release once (GET /version), in the
//     background, and logs once when the server is older than Kubernetes
//     1.35, which promises the order of fencing tokens (see Token).
//
// When cl is a manager (it has Add(manager.Runnable) error), the Locker
// adds itself to it as a Runnable that runs on every replica, leader or
// not, and closes when the manager stops: calls that wait for a lock then
// return ErrClosed, and its background work stops. A manager stops such
// runnables before its controllers, so a reconcile that waits for a lock
// at shutdown returns ErrClosed: treat it as the manager stopping, as a
// cancelled ctx. For any other cluster, call Close when done, or run
// Start.
//
// It returns an error, and sends no request, for a nil cl or an invalid
// namespace; and the manager's error if Add fails.
func NewForCluster(cl cluster.Cluster, namespace string, opts ...Option) (*Locker, error) {
	if nilness.Is(cl) {
		return nil, errNilCluster
	}
	o := collect(opts)
	log := o.logger(clusterLogger(cl))
	o.log = &log
	scheme := cl.GetScheme()
	if !knowsLeases(scheme) {
		scheme = leaseScheme()
	}
	copts := client.Options{Scheme: scheme, HTTPClient: cl.GetHTTPClient(), Mapper: cl.GetRESTMapper()}
	l, err := newBuilt(cl.GetConfig(), copts, namespace, o, false)
	if err != nil {
		return nil, err
	}
	l.reader = cl.GetAPIReader()
	if mgr, ok := cl.(interface{ Add(manager.Runnable) error }); ok {
		if err := mgr.Add(l); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("withlock: add the locker to the manager: %w", err)
		}
	}
	return l, nil
}

// clusterLogger is cl's logger, when it has one (a manager does).
func clusterLogger(cl cluster.Cluster) logr.Logger {
	if g, ok := cl.(interface{ GetLogger() logr.Logger }); ok {
		return g.GetLogger()
	}
	return logf.Log
}

// knowsLeases reports whether s can encode and decode Leases.
func knowsLeases(s *runtime.Scheme) bool {
	gv := coordinationv1.SchemeGroupVersion
	return s != nil && s.Recognizes(gv.WithKind("Lease")) && s.Recognizes(gv.WithKind("LeaseList"))
}
