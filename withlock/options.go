package withlock

// The options of New, and their defaults.

import (
	"time"

	"github.com/go-logr/logr"
)

// DefaultReleaseTimeout bounds the release that runs after fn, on a
// context of its own.
const DefaultReleaseTimeout = 5 * time.Second

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
	log *logr.Logger
}

// collect applies opts to the defaults.
func collect(opts []Option) options {
	o := options{identity: defaultIdentity(), releaseTimeout: DefaultReleaseTimeout}
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
// outlived its lock, a failed release after a panic) for calls whose ctx
// carries none: a ctx's logger, such as the one controller-runtime gives a
// reconciler, always wins. Default: controller-runtime's log.Log.
// logr.Discard() logs nothing.
func WithLogger(log logr.Logger) Option {
	return func(o *options) { o.log = &log }
}
