package resourcelock

import (
	"math"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/nilness"
)

// Defaults, tuned for short-lived locks that protect a single API call.
const (
	// DefaultLeaseDuration is how long a Lease is valid after it was acquired.
	DefaultLeaseDuration = 15 * time.Second
	// DefaultRetryInterval is the wait between attempts while a lock is held.
	DefaultRetryInterval = 500 * time.Millisecond
	// DefaultRetryTimeout is how long AcquireLock retries a held lock, and
	// ReleaseLock a transient error.
	DefaultRetryTimeout = 5 * time.Second
)

// Option configures a ResourceLocker.
type Option func(*ResourceLocker)

// WithLeaseDuration sets the lease duration. Default is 15 seconds.
// Sub-second values are rounded up to 1 second; non-positive values are
// ignored.
//
// A Lease stores its duration in whole seconds, so any duration is rounded up
// to the next whole second, never down: a holder is never given less time than
// it asked for. Durations beyond what the Lease field holds (math.MaxInt32
// seconds) are capped there.
func WithLeaseDuration(d time.Duration) Option {
	return func(rl *ResourceLocker) {
		if d <= 0 {
			return
		}
		rl.leaseDuration = roundUpToSecond(d)
	}
}

// WithRetryInterval sets the interval between acquire retries. Default is
// 500ms. Non-positive values are ignored, and values beyond math.MaxInt32
// seconds (68 years) are capped there.
//
// The interval is jittered by up to 10% so that waiters do not poll in step,
// and a waiter wakes earlier when the Lease it waits for expires sooner.
func WithRetryInterval(d time.Duration) Option {
	return func(rl *ResourceLocker) {
		if d > 0 {
			// Capped so that the jitter added to it cannot overflow.
			rl.retryInterval = min(d, maxLeaseDuration)
		}
	}
}

// WithRetryTimeout sets the total time to retry acquiring a held lock. Default
// is 5s. Negative values are ignored. It also bounds the retries of
// transient errors in ReleaseLock (and in the release after a failed
// acquire): with 0, such an error leaves the Lease until it expires.
//
// A retry timeout of 0 makes AcquireLock a try-lock: it makes one attempt and
// returns ErrLockHeld at once, without waiting, if another locker holds the
// lock.
func WithRetryTimeout(d time.Duration) Option {
	return func(rl *ResourceLocker) {
		if d >= 0 {
			rl.retryTimeout = d
		}
	}
}

// WithClock sets the clock that judges expiry and paces retries. Default is
// the real clock; tests pass a fake one (k8s.io/utils/clock/testing). A nil
// clock is ignored.
func WithClock(c clock.Clock) Option {
	return func(rl *ResourceLocker) {
		if c != nil {
			rl.clock = c
		}
	}
}

// maxLeaseDuration is the longest duration Lease.spec.leaseDurationSeconds,
// an int32, can hold.
const maxLeaseDuration = math.MaxInt32 * time.Second

// WithWatchClient sets the client that waiters watch the Lease with. By
// default a locker watches with its own client when that client can
// (client.WithWatch, as client.NewWithWatch builds; a manager's
// GetClient() cannot). A waiter that watches wakes as soon as the Lease is
// deleted or changes, and sends no request while it waits; without a watch
// it polls at the retry interval. A nil client, or a nil pointer in it, is
// ignored.
func WithWatchClient(w client.WithWatch) Option {
	return func(rl *ResourceLocker) {
		if !nilness.Is(w) {
			rl.watcher = w
		}
	}
}

// WithoutWatch makes waiters poll at the retry interval even when the
// client can watch.
func WithoutWatch() Option {
	return func(rl *ResourceLocker) { rl.noWatch = true }
}

// WithMetrics sets the Prometheus registerer of the locker's metrics (see
// the package doc). Default: controller-runtime's metrics.Registry, which a
// manager serves on /metrics. A nil registerer, or a nil pointer in it,
// records no metrics.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(rl *ResourceLocker) { rl.registerer = reg }
}

// WithLockNameLabel labels every metric with the lock name. Off by default:
// use it only when the lock names are few and fixed, since each name makes a
// time series of its own. Lockers that share a registerer share its labels:
// the first locker to register there decides, and the option of a later one
// has no effect (see the package doc).
func WithLockNameLabel() Option {
	return func(rl *ResourceLocker) { rl.byName = true }
}

// WithLogger sets the logger of calls whose ctx carries none (see
// logr.FromContext): a ctx's logger, such as the one controller-runtime
// gives a reconciler, always wins. Default: controller-runtime's log.Log,
// which logs nothing until log.SetLogger is called, and then warns, 30s into
// the program, that it never was. A program without controller-runtime's
// logger should pass its own, or logr.Discard().
func WithLogger(log logr.Logger) Option {
	return func(rl *ResourceLocker) { rl.log = log }
}

func roundUpToSecond(d time.Duration) time.Duration {
	if d >= maxLeaseDuration {
		return maxLeaseDuration
	}
	if r := d % time.Second; r != 0 {
		d += time.Second - r
	}
	return d
}
