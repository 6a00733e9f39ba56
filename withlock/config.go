package withlock

// NewForConfig, and what it shares with NewForCluster: a Locker on a
// ResourceLocker of its own, whose client reads Leases uncached and
// watches them, and the removal of leftover Leases.

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/resourcelock"
)

var errNilConfig = errors.New("withlock: rest config is nil")

// NewForConfig returns a Locker for a program without a controller-runtime
// manager (a script, a tool), wired as NewForCluster wires one: its Leases
// go through a client of its own, with its own HTTP client, that reads them
// uncached and watches them, so waiters wake as soon as a lock is released
// and send no request while they wait; and it removes the Leases of this
// library that stayed expired (WithLeftoverRemoval). It asks the server's
// release once, in the background, as NewForCluster does. It logs through
// klog.Background() unless WithLogger says otherwise, and nothing it does
// goes through controller-runtime's log.Log, so a program that never calls
// log.SetLogger gets no warning that it did not.
//
// Call Close when done: it ends waiting calls with ErrClosed, stops the
// removal, and closes the ResourceLocker and the idle connections.
//
// It returns an error, and sends no request, for a nil cfg, an invalid
// namespace, or a cfg no HTTP client can be built from.
func NewForConfig(cfg *rest.Config, namespace string, opts ...Option) (*Locker, error) {
	if cfg == nil {
		return nil, errNilConfig
	}
	o := collect(opts)
	log := o.logger(klog.Background())
	o.log = &log
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("withlock: HTTP client for %s: %w", cfg.Host, err)
	}
	return newBuilt(cfg, client.Options{Scheme: leaseScheme(), HTTPClient: hc}, namespace, o, true)
}

// newBuilt returns a Locker on a ResourceLocker of its own in namespace,
// whose client, built from cfg and copts, can watch, and starts its
// removal of leftover Leases and the check of the server's release. o's logger must be set. When ownsHTTP is set,
// Close closes the idle connections of copts' HTTP client.
func newBuilt(cfg *rest.Config, copts client.Options, namespace string, o options, ownsHTTP bool) (*Locker, error) {
	if err := resourcelock.ValidateNamespace(namespace); err != nil {
		return nil, err
	}
	log := *o.log
	cfg = rest.CopyConfig(cfg)
	if cfg.WarningHandler == nil && cfg.WarningHandlerWithContext == nil {
		// client.New's default logs through controller-runtime's log.Log.
		cfg.WarningHandlerWithContext = warningLogger{log}
	}
	// client.New would replace a zero logger (logr.Discard()) with log.Log.
	copts.Log = log
	if log.IsZero() {
		copts.Log = logr.New(discard{})
	}
	c, err := client.NewWithWatch(cfg, copts)
	if err != nil {
		return nil, fmt.Errorf("withlock: client for Leases: %w", err)
	}
	rl := resourcelock.NewResourceLocker(c, namespace, append([]resourcelock.Option{resourcelock.WithLogger(log)}, o.rlOpts...)...)
	l := newLocker(rl, o)
	l.closeBuilt = func() {
		_ = rl.Close()
		if ownsHTTP {
			// client-go wraps its transport: http.Client's own
			// CloseIdleConnections would not reach it.
			utilnet.CloseIdleConnectionsFor(copts.HTTPClient.Transport)
		}
	}
	l.startRemoval(o.leftoverAge)
	if dc, err := discovery.NewDiscoveryClientForConfigAndClient(cfg, copts.HTTPClient); err == nil {
		l.startVersionCheck(dc)
	} else {
		log.V(1).Info("could not build a discovery client to ask the API server its release", "error", err)
	}
	return l, nil
}

// leaseScheme knows Leases, and nothing else: the scheme of the Lease
// clients this package builds when the caller's scheme has no Lease.
var leaseScheme = sync.OnceValue(func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := coordinationv1.AddToScheme(s); err != nil {
		panic(fmt.Sprintf("withlock: add coordination.k8s.io/v1 to a scheme: %v", err))
	}
	return s
})

// warningLogger logs the warnings the API server sends with its answers,
// through the request's ctx's logger or log.
type warningLogger struct{ log logr.Logger }

func (w warningLogger) HandleWarningHeaderWithContext(ctx context.Context, code int, _, message string) {
	if code == 299 && message != "" {
		logFor(ctx, w.log).Info(message)
	}
}

// discard is a log sink that logs nothing.
type discard struct{}

func (discard) Init(logr.RuntimeInfo)            {}
func (discard) Enabled(int) bool                 { return false }
func (discard) Info(int, string, ...any)         {}
func (discard) Error(error, string, ...any)      {}
func (d discard) WithValues(...any) logr.LogSink { return d }
func (d discard) WithName(string) logr.LogSink   { return d }
