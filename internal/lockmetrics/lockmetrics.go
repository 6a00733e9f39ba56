// Package lockmetrics holds the Prometheus metrics of a ResourceLocker,
// which withlock records its lost locks through.
package lockmetrics

import (
	"errors"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leaselock/leaselock/internal/nilness"
)

// Results of an acquire, the values of the result label.
const (
	Acquired  = "acquired"
	Held      = "held"
	Cancelled = "cancelled"
	Error     = "error"
)

// Set is the metrics of one registerer. A nil *Set records nothing.
type Set struct {
	byName bool

	acquire   *prometheus.HistogramVec
	wait      *prometheus.HistogramVec
	hold      *prometheus.HistogramVec
	contended *prometheus.CounterVec
	takeovers *prometheus.CounterVec
	stolen    *prometheus.CounterVec
	lost      *prometheus.CounterVec
	renewals  *prometheus.CounterVec
	apiErrors *prometheus.CounterVec
}

// Buckets from 1ms to about 33s: a lock held around one write is taken in
// milliseconds, and a waiter gives up after seconds.
var buckets = prometheus.ExponentialBuckets(0.001, 2, 16)

// ForLocker returns the Set of a *resourcelock.ResourceLocker, nil for
// anything else; resourcelock sets it. withlock records through the
// ResourceLocker it was given, so that a locker's metrics have one owner and
// one registerer.
var ForLocker = func(any) *Set { return nil }

// For returns the metrics registered with reg, labelled by lock name when
// byName is set. It registers them, or takes up those of the same names and
// labels already registered there: every locker on one registerer records
// into the same series. A nil reg, or a nil pointer in it, gives a nil Set.
//
// A metric has one set of labels per registerer, so the first locker to
// register decides whether the metrics there carry the lock name: a later
// one that asks for the other labels gets metrics that record but are not
// exported.
func For(reg prometheus.Registerer, byName bool) *Set {
	if nilness.Is(reg) {
		return nil
	}
	var lock []string
	if byName {
		lock = []string{"lock"}
	}
	s := &Set{
		byName: byName,
		acquire: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "leaselock_acquire_duration_seconds", Buckets: buckets,
			Help: "Time AcquireLock took, by result: acquired, held (gave up), cancelled, error.",
		}, append([]string{"result"}, lock...)),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "leaselock_wait_duration_seconds", Buckets: buckets,
			Help: "Time AcquireLock spent waiting for another holder, for acquisitions that found the lock held.",
		}, lock),
		hold: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "leaselock_hold_duration_seconds", Buckets: buckets,
			Help: "Time from acquire to release of a lock.",
		}, lock),
		contended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaselock_contended_acquisitions_total",
			Help: "Acquisitions that found the lock held by another holder at least once.",
		}, lock),
		takeovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaselock_expired_takeovers_total",
			Help: "Locks taken over from another holder whose lease had expired: it crashed or ran too long.",
		}, lock),
		stolen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaselock_release_taken_over_total",
			Help: "Releases that found the lock already taken over by another holder.",
		}, lock),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaselock_locks_lost_total",
			Help: "Functions run by withlock that outlived their lock: its lease could have expired, or a renewal found it taken.",
		}, lock),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaselock_renewals_total",
			Help: "Renewals of held locks, by result: renewed, lost (another holder, or no Lease), or failed (an error; the lock may still be held).",
		}, append([]string{"result"}, lock...)),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaselock_api_errors_total",
			Help: "Errors from the API server by kind (the Status reason, or Network).",
		}, append([]string{"kind"}, lock...)),
	}
	s.acquire = register(reg, s.acquire)
	s.wait = register(reg, s.wait)
	s.hold = register(reg, s.hold)
	s.contended = register(reg, s.contended)
	s.takeovers = register(reg, s.takeovers)
	s.stolen = register(reg, s.stolen)
	s.lost = register(reg, s.lost)
	s.renewals = register(reg, s.renewals)
	s.apiErrors = register(reg, s.apiErrors)
	return s
}

// register registers c with reg, or returns the collector of the same name
// already there. A collector that cannot be registered (the same name with
// other labels, registered on reg by something else) still records, but is
// not exported.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	return c
}

func (s *Set) labels(name string, first ...string) []string {
	if s.byName {
		return append(first, name)
	}
	return first
}

// Acquire records one AcquireLock: its result, how long it took, whether it
// found the lock held by another, and if so how long it waited from then.
func (s *Set) Acquire(name, result string, took time.Duration, contended bool, waited time.Duration) {
	if s == nil {
		return
	}
	s.acquire.WithLabelValues(s.labels(name, result)...).Observe(took.Seconds())
	if contended {
		s.contended.WithLabelValues(s.labels(name)...).Inc()
		if result == Acquired {
			s.wait.WithLabelValues(s.labels(name)...).Observe(waited.Seconds())
		}
	}
}

// Hold records the time from acquire to release.
func (s *Set) Hold(name string, held time.Duration) {
	if s == nil {
		return
	}
	s.hold.WithLabelValues(s.labels(name)...).Observe(held.Seconds())
}

// Takeover counts a takeover of an expired lease.
func (s *Set) Takeover(name string) {
	if s == nil {
		return
	}
	s.takeovers.WithLabelValues(s.labels(name)...).Inc()
}

// ReleaseTakenOver counts a release that found another holder.
func (s *Set) ReleaseTakenOver(name string) {
	if s == nil {
		return
	}
	s.stolen.WithLabelValues(s.labels(name)...).Inc()
}

// Lost counts a withlock function that outlived its lock: its lease could
// have expired, or a renewal found it taken. withlock counts renewals
// through Renewal, which resourcelock's Renew records, never here.
func (s *Set) Lost(name string) {
	if s == nil {
		return
	}
	s.lost.WithLabelValues(s.labels(name)...).Inc()
}

// The results of a renewal.
const (
	Renewed     = "renewed"
	RenewLost   = "lost"
	RenewFailed = "failed"
)

// Renewal counts a renewal of a held lock by its result.
func (s *Set) Renewal(name, result string) {
	if s == nil {
		return
	}
	s.renewals.WithLabelValues(s.labels(name, result)...).Inc()
}

// APIError counts an error from a request to the API server, by kind: the
// Status reason (Conflict, AlreadyExists, Forbidden, InternalError, ...),
// Network for a lost connection or timeout, or Unknown.
func (s *Set) APIError(name string, err error) {
	if s == nil || err == nil {
		return
	}
	s.apiErrors.WithLabelValues(s.labels(name, Kind(err))...).Inc()
}

// Kind names the kind of an error from the API server.
func Kind(err error) string {
	if reason := apierrors.ReasonForError(err); reason != metav1.StatusReasonUnknown {
		return string(reason)
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return "Network"
	}
	return "Unknown"
}
