package withlock

// The options of New, NewForCluster and NewForConfig, and their defaults.

import (
	"time"

	"github.com/go-logr/logr"

	"github.com/leaselock/leaselock/resourcelock"
)

// Defaults.
const (
	// DefaultReleaseTimeout bounds the release that runs after fn, on a
	// context of its own.
	DefaultReleaseTimeout = 5 * time.Second

	// DefaultLeftoverAge is how long a Lease of this library must have
	// stayed expired before a Locker from NewForCluster or NewForConfig
	// removes it (see WithLeftoverRemoval).
	DefaultLeftoverAge = 5 * time.Minute
)

// Option configures a Locker.
type Option func(*options)

// options is what the options set; each constructor reads what applies to
// it.
type options struct {
	identity       string
	releaseTimeout time.Duration
	// margin is nil for the default, a fifth of the lease duration.
	margin *time.Duration
	// log is nil for the constructor's default logger.
	log         *logr.Logger
	rlOpts      []resourcelock.Option
	leftoverAge time.Duration
	noRenewal   bool
	maxHold     time.Duration
}

// collect applies opts to the defaults.
func collect(opts []Option) options {
	o := options{identity: defaultIdentity(), releaseTimeout: DefaultReleaseTimeout, leftoverAge: DefaultLeftoverAge}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// logger is the logger the options chose, else def.
func (o options) logger(def logr.Logger) logr.Logger {
	if o.log != nil {
		return *o.log
	}
	return def
}

// WithIdentity sets the stable part of every holder ID, so that `kubectl get
// lease` shows which process holds a lock. Default: $POD_NAME when set, else
// the hostname. Holder IDs are the identity, an underscore, and a fresh UUID.
// An empty identity is ignored; one that is not valid UTF-8 makes every call
// fail with resourcelock's invalid lockerID error, before any request.
func WithIdentity(id string) Option {
	return func(o *options) {
		if id != "" {
			o.identity = id
		}
	}
}

// WithReleaseTimeout bounds the release after fn. Default
// DefaultReleaseTimeout; non-positive values are ignored.
func WithReleaseTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.releaseTimeout = d
		}
	}
}

// WithSafetyMargin sets how long before the lease could expire the ctx given
// to fn is cancelled with ErrLockLost. Default: a fifth of the lease
// duration (3s of the default 15s). Values below zero, or not shorter than
// the lease duration, are ignored.
//
// The margin covers clock drift between replicas and the time a write takes
// to reach the server: make it larger if your nodes' clocks may disagree.
func WithSafetyMargin(d time.Duration) Option {
	return func(o *options) { o.margin = &d }
}

// WithLogger sets the logger of the Locker's own lines (a function that
// outlived its lock, a failed release after a panic, the removal of
// leftover Leases) for calls whose ctx carries none: a ctx's logger, such
// as the one controller-runtime gives a reconciler, always wins.
// NewForCluster and NewForConfig give it to the ResourceLocker they build
// as well (resourcelock.WithLogger).
//
// Default: for New, its ResourceLocker's (resourcelock.WithLogger); for NewForCluster, the
// manager's GetLogger() (log.Log for a cluster that has none); for
// NewForConfig, klog.Background(), so that a program without
// controller-runtime's logger gets no warning that it never set one.
// logr.Discard() logs nothing.
func WithLogger(log logr.Logger) Option {
	return func(o *options) { o.log = &log }
}

// WithResourceLockerOptions passes opts to the ResourceLocker that
// NewForCluster or NewForConfig builds (lease duration, retry timeout,
// metrics), after the logger they set, so an opts' resourcelock.WithLogger
// wins. New ignores it: its ResourceLocker is built already. Nil options
// are ignored.
func WithResourceLockerOptions(opts ...resourcelock.Option) Option {
	return func(o *options) { o.rlOpts = append(o.rlOpts, opts...) }
}

// WithLeftoverRemoval sets how long a Lease of this library
// (resourcelock.ManagedByLabel) must have stayed expired before a Locker
// from NewForCluster or NewForConfig deletes it. Such Leases are left by
// holders that crashed, or whose release failed, and for per-object lock
// names may never be locked, and so cleared, again.
//
// Every age/2, or every 10s when age/2 is shorter, with up to 10% jitter
// and starting one such period after the Locker was built, the Locker
// lists its namespace's Leases of the label (paged by 500) and deletes
// those expired more than age ago on its clock, each Delete conditional on
// the UID and resourceVersion listed, so that a Lease renewed or taken
// over since stays. A Lease so goes within a period after it has been
// expired for age. This needs the list verb on Leases (examples/rbac.yaml):
// a Forbidden is logged once, and the removal stops. Close stops it.
//
// Default DefaultLeftoverAge. A negative age turns the removal off. age is a
// margin for clocks that disagree too: a holder whose clock runs more than
// age behind this one's could see its Lease removed while it holds it, so
// keep it well above your clocks' drift. New ignores it: a Locker from New
// starts no background work.
func WithLeftoverRemoval(age time.Duration) Option {
	return func(o *options) { o.leftoverAge = age }
}

// WithoutRenewal turns off the renewal of a lock while fn runs: the ctx
// given to fn is then cancelled with ErrLockLost a lease duration less the
// safety margin after the acquire, whatever fn does, as a timeout.
//
// By default a Locker renews each lock it holds about every third of the
// lease duration (or half the lease less the margin, when a large margin
// makes that shorter) for as long as fn runs, as etcd's concurrency.Session,
// Consul's sessions and Redisson's watchdog keep theirs: the lease then
// bounds only how long a holder that crashed or lost the API server blocks
// the others, not how long fn may take, so it can stay short. A fn that
// returns within a third of the lease sends no renewal. Use WithMaxHold to
// cap a hold, since a fn that never returns then keeps its lock for as long
// as its process reaches the API server.
func WithoutRenewal() Option {
	return func(o *options) { o.noRenewal = true }
}

// WithMaxHold caps the time a lock is held, from the start of its
// acquire: at d the renewals stop and the ctx given to fn is cancelled
// with ErrMaxHold, which the call's error includes. The lock is released
// when fn returns; a fn that goes on past its lease less the margin gets
// ErrLockLost too. With renewal off, a cap beyond the lease less the
// margin is never reached.
//
// Default: no cap, as etcd's and Consul's sessions have none: the ctx
// given to WithLock is the caller's bound on fn (a reconcile's deadline, a
// job's timeout), and a cap that the library picked would cut a long
// migration short as surely as it would a stuck one. Values d <= 0 mean no
// cap.
func WithMaxHold(d time.Duration) Option {
	return func(o *options) { o.maxHold = max(d, 0) }
}
