package resourcelock_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/resourcelock"
)

// These tests show that no call outlives its timeout whatever the client
// does, and that errors say what failed. They run on the real clock: what
// they show is when a call returns, with a client that does not answer.

// lastRequest is how long past its retry timeout a call may run (see
// pace.go), with room for a slow machine.
const lastRequest = 2*time.Second + 500*time.Millisecond

// unanswered is a read that never finishes: it blocks until its ctx ends,
// and then fails as an informer cache that cannot sync does.
func unanswered(ctx context.Context, _ client.WithWatch, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	<-ctx.Done()
	return apierrors.NewTimeoutError("failed waiting for *v1.Lease Informer to sync", 0)
}

// unreadableLease returns a store with a Lease that another holder holds,
// a locker on it with the retry timeout given, whose reads never finish
// and whose client cannot watch (as a manager's GetClient() with the least
// Role), and the log of its requests.
func unreadableLease(timeout time.Duration) (client.WithWatch, *callLog, *resourcelock.ResourceLocker) {
	base := newFake(heldLease(holderOther, time.Now(), 60))
	log := &callLog{}
	c := struct{ client.Client }{counted(base, log, interceptor.Funcs{Get: unanswered})}
	return base, log, resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryTimeout(timeout), resourcelock.WithRetryInterval(50*time.Millisecond))
}

func TestAcquireUnreadableLeaseEndsAtItsTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	_, log, rl := unreadableLease(timeout)
	start := time.Now()
	err := rl.AcquireLock(context.Background(), unitLock, holderMe)
	took := time.Since(start)
	if !errors.Is(err, resourcelock.ErrLockHeld) {
		t.Fatalf("AcquireLock: got %v, want ErrLockHeld", err)
	}
	if took > timeout+lastRequest {
		t.Errorf("AcquireLock returned after %v, want within its retry timeout %v plus one request", took, timeout)
	}
	for _, want := range []string{unitNS + "/" + unitLock, "could not be read", "informer cache"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !apierrors.IsTimeout(err) {
		t.Errorf("error %v: apierrors.IsTimeout does not see the read's error", err)
	}
	if got := log.count("create"); got < 2 {
		t.Errorf("creates: got %d, want 2 or more: the call goes on creating while it cannot read", got)
	}
}

func TestAcquireUnreadableLeaseReleasedDuringTheWait(t *testing.T) {
	const timeout = 500 * time.Millisecond
	base, _, rl := unreadableLease(timeout)
	release := time.AfterFunc(100*time.Millisecond, func() {
		if err := base.Delete(context.Background(), heldLease(holderOther, time.Now(), 60)); err != nil {
			t.Errorf("delete the held Lease: %v", err)
		}
	})
	defer release.Stop()
	start := time.Now()
	if err := rl.AcquireLock(context.Background(), unitLock, holderMe); err != nil {
		t.Fatalf("AcquireLock of a lock released during the wait: %v", err)
	}
	if took := time.Since(start); took > timeout+lastRequest {
		t.Errorf("AcquireLock returned after %v, want within its retry timeout %v plus one request", took, timeout)
	}
	if got := holderOf(storedLease(t, base)); got != holderMe {
		t.Errorf("holder: got %q, want %q", got, holderMe)
	}
}

// refused is the error of a request to a server that refuses connections.
func refused() error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

func TestAcquireUnsentRequestsNeedNoRelease(t *testing.T) {
	const timeout = 300 * time.Millisecond
	var log callLog
	c := counted(newFake(), &log, interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return refused()
		},
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error { return refused() },
		Delete: func(context.Context, client.WithWatch, client.Object, ...client.DeleteOption) error { return refused() },
		Watch: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
			return nil, refused()
		},
	})
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryTimeout(timeout), resourcelock.WithRetryInterval(50*time.Millisecond))
	start := time.Now()
	err := rl.AcquireLock(context.Background(), unitLock, holderMe)
	took := time.Since(start)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("AcquireLock: got %v, want the refused connection", err)
	}
	if !strings.Contains(err.Error(), unitNS+"/"+unitLock) {
		t.Errorf("error %q does not name the lock", err)
	}
	if took > timeout+timeout/2 {
		t.Errorf("AcquireLock returned after %v, want about its retry timeout %v: a Create never sent needs no clean-up", took, timeout)
	}
	if got := log.count("delete"); got != 0 {
		t.Errorf("deletes: got %d, want 0: no Create reached the server", got)
	}
	if strings.Contains(err.Error(), "may have taken") {
		t.Errorf("error %q says a write may have taken the lock: none was sent", err)
	}
}

func TestAcquireTryLockOnAnUnreadableLease(t *testing.T) {
	base := newFake(heldLease(holderOther, time.Now(), 60))
	var log callLog
	c := struct{ client.Client }{counted(base, &log, interceptor.Funcs{Get: unanswered})}
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryTimeout(0))
	start := time.Now()
	err := rl.AcquireLock(context.Background(), unitLock, holderMe)
	if took := time.Since(start); took > lastRequest {
		t.Errorf("a try-lock returned after %v, want within one request", took)
	}
	if !errors.Is(err, resourcelock.ErrLockHeld) {
		t.Fatalf("try-lock on an unreadable held Lease: got %v, want ErrLockHeld", err)
	}
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "may have taken") {
		t.Errorf("error %q: want neither a deadline of the caller's nor a write that may have won", err)
	}
	if got := log.count("create"); got != 2 {
		t.Errorf("creates: got %d, want 2: the first, and one after the read that could not finish", got)
	}
}

func TestAcquireReadsFailingFastOnAHeldLease(t *testing.T) {
	const timeout = 300 * time.Millisecond
	base := newFake(heldLease(holderOther, time.Now(), 60))
	var log callLog
	c := struct{ client.Client }{counted(base, &log, interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return apierrors.NewServiceUnavailable("busy")
		},
	})}
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryTimeout(timeout), resourcelock.WithRetryInterval(100*time.Millisecond))
	err := rl.AcquireLock(context.Background(), unitLock, holderMe)
	if !errors.Is(err, resourcelock.ErrLockHeld) || !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("AcquireLock with reads that fail at once: got %v, want ErrLockHeld wrapping the 503", err)
	}
	// Each failed read backs off (20ms, doubling) before its Create, and a
	// Create that finds the Lease waits a poll interval: a handful, not a
	// Create per millisecond.
	if got := log.count("create"); got > 8 {
		t.Errorf("creates: got %d in %v, want a handful", got, timeout)
	}
}

func TestAcquireCancelledEndsWithinOneRequest(t *testing.T) {
	// The server never answers a write: a cancel gives it lastRequest, not
	// the rest of the retry timeout.
	c := interceptor.NewClient(newFake(), interceptor.Funcs{
		Create: func(ctx context.Context, _ client.WithWatch, _ client.Object, _ ...client.CreateOption) error {
			<-ctx.Done()
			return ctx.Err()
		},
		Get: func(ctx context.Context, _ client.WithWatch, _ client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
			<-ctx.Done()
			return ctx.Err()
		},
	})
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryTimeout(10*time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err := rl.AcquireLock(ctx, unitLock, holderMe)
	if took := time.Since(start); took > 100*time.Millisecond+2*lastRequest {
		t.Errorf("AcquireLock cancelled at 100ms returned after %v, want within the write's and the release's last request", took)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("AcquireLock: got %v, want context.Canceled", err)
	}
}

func TestAcquireOwnBoundIsNoDeadlineOfTheCaller(t *testing.T) {
	c := struct{ client.Client }{interceptor.NewClient(newFake(heldLease(holderOther, time.Now(), 60)), interceptor.Funcs{Get: func(ctx context.Context, _ client.WithWatch, _ client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
		<-ctx.Done()
		return ctx.Err()
	}})}
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryTimeout(200*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	err := rl.AcquireLock(ctx, unitLock, holderMe)
	if !errors.Is(err, resourcelock.ErrLockHeld) {
		t.Fatalf("AcquireLock: got %v, want ErrLockHeld", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q: errors.Is sees context.DeadlineExceeded, and the caller's ctx has an hour left", err)
	}
}

func TestAcquireRefusedWatchIsRemembered(t *testing.T) {
	base := newFake(heldLease(holderOther, time.Now(), 60))
	var log callLog
	c := counted(base, &log, interceptor.Funcs{
		Watch: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
			return nil, apierrors.NewForbidden(leasesResource, "", errors.New("watch not granted"))
		},
	})
	lines := &logLines{}
	ctx := logr.NewContext(context.Background(), lines.logger())
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryTimeout(200*time.Millisecond), resourcelock.WithRetryInterval(20*time.Millisecond))
	for range 2 {
		if err := rl.AcquireLock(ctx, unitLock, holderMe); !errors.Is(err, resourcelock.ErrLockHeld) {
			t.Fatalf("AcquireLock: got %v, want ErrLockHeld", err)
		}
	}
	if got := log.count("watch"); got != 1 {
		t.Errorf("watches: got %d, want 1: a refused watch is not sent again", got)
	}
	if got := log.count("get"); got < 10 {
		t.Errorf("gets: got %d, want 10 or more: the waiters poll", got)
	}
	if got := lines.count("watch of Leases refused"); got != 1 {
		t.Errorf("log lines that say the watch was refused: got %d, want 1\n%s", got, lines)
	}
}

func TestAcquireRefusedPlainWatchIsRemembered(t *testing.T) {
	base := newFake(heldLease(holderOther, time.Now(), 60))
	var log callLog
	c := counted(base, &log, interceptor.Funcs{
		Watch: func(_ context.Context, _ client.WithWatch, _ client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			if resourcelock.IsWatchList(opts) { // a server without watch-lists
				return nil, apierrors.NewBadRequest("sendInitialEvents is not supported")
			}
			return nil, apierrors.NewForbidden(leasesResource, "", errors.New("watch not granted"))
		},
	})
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryTimeout(200*time.Millisecond), resourcelock.WithRetryInterval(20*time.Millisecond))
	for range 2 {
		if err := rl.AcquireLock(context.Background(), unitLock, holderMe); !errors.Is(err, resourcelock.ErrLockHeld) {
			t.Fatalf("AcquireLock: got %v, want ErrLockHeld", err)
		}
	}
	if got := log.count("watch"); got != 2 {
		t.Errorf("watches: got %d, want 2: the watch-list, refused once, and the plain watch, refused once", got)
	}
}

func TestAcquirePollingIsLoggedOnce(t *testing.T) {
	// A client.Client, not a client.WithWatch, as a manager's GetClient() is.
	var c client.Client = newFake(heldLease(holderOther, time.Now(), 60))
	c = struct{ client.Client }{c}
	lines := &logLines{}
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryTimeout(100*time.Millisecond),
		resourcelock.WithRetryInterval(20*time.Millisecond), resourcelock.WithLogger(lines.logger()))
	for range 3 {
		if err := rl.AcquireLock(context.Background(), unitLock, holderMe); !errors.Is(err, resourcelock.ErrLockHeld) {
			t.Fatalf("AcquireLock: got %v, want ErrLockHeld", err)
		}
	}
	if got := lines.count("cannot watch"); got != 1 {
		t.Errorf("log lines that say the client cannot watch: got %d, want 1\n%s", got, lines)
	}
	if !strings.Contains(lines.String(), "NewForCluster") {
		t.Errorf("the log does not say how to get the fast path:\n%s", lines)
	}
	quiet := &logLines{}
	rl = resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryTimeout(50*time.Millisecond),
		resourcelock.WithoutWatch(), resourcelock.WithLogger(quiet.logger()))
	if err := rl.AcquireLock(context.Background(), unitLock, holderMe); !errors.Is(err, resourcelock.ErrLockHeld) {
		t.Fatalf("AcquireLock: got %v, want ErrLockHeld", err)
	}
	if got := quiet.count("cannot watch"); got != 0 {
		t.Errorf("with WithoutWatch, log lines that say the client cannot watch: got %d, want 0", got)
	}
}

func TestErrorsNameTheLock(t *testing.T) {
	t.Run("acquire cancelled by its ctx on a held lock", func(t *testing.T) {
		rl := resourcelock.NewResourceLocker(newFake(heldLease(holderOther, time.Now(), 60)), unitNS)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := rl.AcquireLock(ctx, unitLock, holderMe)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("AcquireLock: got %v, want context.DeadlineExceeded", err)
		}
		for _, want := range []string{"acquire", unitNS + "/" + unitLock, holderMe, holderOther} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})
	t.Run("release that times out", func(t *testing.T) {
		c := interceptor.NewClient(newFake(), interceptor.Funcs{
			Delete: func(ctx context.Context, _ client.WithWatch, _ client.Object, _ ...client.DeleteOption) error {
				<-ctx.Done()
				return ctx.Err()
			},
		})
		rl := resourcelock.NewResourceLocker(c, unitNS)
		if err := rl.AcquireLock(context.Background(), unitLock, holderMe); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := rl.ReleaseLock(ctx, unitLock, holderMe)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ReleaseLock: got %v, want context.DeadlineExceeded", err)
		}
		for _, want := range []string{"release", unitNS + "/" + unitLock, holderMe} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})
}

// logLines keeps the messages of a logger.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{Verbosity: 1})
}

func (l *logLines) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
