package withlock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// TestServerNewForConfig runs a program without a manager: the Locker from
// NewForConfig takes every path of the lock (create, contend and wait on a
// watch, take over an expired Lease, release) and Update works through it.
// Nothing it does reaches controller-runtime's log.Log, which would warn,
// 30s into a program that never set it, that it never was; and Close
// leaves no goroutine behind.
func TestServerNewForConfig(t *testing.T) {
	var reqs testenv.Requests
	cfg := testenv.CountedConfig(t, &reqs)
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "counter", Namespace: ns}, Data: map[string]string{"count": "1"}}
	if err := admin.Create(t.Context(), cm); err != nil {
		t.Fatal(err)
	}
	expiredLease(t, admin, ns, "taken-over", true)
	leaks := goleak.IgnoreCurrent()
	runtimeLogCalls := testenv.RuntimeLogCalls()

	l, err := withlock.NewForConfig(cfg, ns, withlock.WithResourceLockerOptions(resourcelock.WithRetryTimeout(time.Minute)))
	if err != nil {
		t.Fatalf("NewForConfig: %v", err)
	}
	ctx := t.Context()
	nop := func(context.Context) error { return nil }
	if err := l.WithLock(ctx, "paths", nop); err != nil {
		t.Errorf("uncontended: %v", err)
	}
	contend(t, l, &reqs, "paths")
	if err := l.WithLock(ctx, "taken-over", nop); err != nil {
		t.Errorf("takeover: %v", err)
	}
	if err := withlock.Update(ctx, l, admin, cm, increment); err != nil || cm.Data["count"] != "2" {
		t.Errorf("Update: got count %q and %v, want 2 and nil", cm.Data["count"], err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: got %v, want nil", err)
	}

	if got := testenv.RuntimeLogCalls() - runtimeLogCalls; got != 0 {
		t.Errorf("got %d calls to controller-runtime's log.Log, want none", got)
	}
	if err := l.WithLock(ctx, "paths", nop); !errors.Is(err, withlock.ErrClosed) {
		t.Errorf("after Close: got %v, want ErrClosed", err)
	}
	// Close closed the idle connections of the Locker's HTTP client.
	noGoroutineLeft(t, leaks)
}

// TestNewForRejectsBadInput: NewForCluster and NewForConfig return an
// error for what cannot work, and send no request (the config's server
// does not exist).
func TestNewForRejectsBadInput(t *testing.T) {
	nowhere := &rest.Config{Host: "https://127.0.0.1:1"}
	tests := []struct {
		name    string
		new     func() (*withlock.Locker, error)
		wantMsg string
	}{
		{"NewForCluster(nil)", func() (*withlock.Locker, error) { return withlock.NewForCluster(nil, "ns") }, "cluster is nil"},
		{"NewForConfig(nil)", func() (*withlock.Locker, error) { return withlock.NewForConfig(nil, "ns") }, "rest config is nil"},
		{"invalid namespace", func() (*withlock.Locker, error) { return withlock.NewForConfig(nowhere, "Bad_NS") }, `invalid namespace "Bad_NS"`},
		{"empty namespace", func() (*withlock.Locker, error) { return withlock.NewForConfig(nowhere, "") }, `invalid namespace ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := tt.new()
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantMsg)
			}
			if l != nil {
				t.Errorf("got a Locker, want nil")
			}
		})
	}
}

// TestNewForConfigLeavesControllerRuntimesLogAlone builds and closes a
// Locker with NewForConfig, with its default logger and with
// logr.Discard(), which client.New would replace with log.Log: neither
// touches controller-runtime's log.Log. The config's server does not
// exist; building the Locker sends no request.
func TestNewForConfigLeavesControllerRuntimesLogAlone(t *testing.T) {
	nowhere := &rest.Config{Host: "https://127.0.0.1:1"}
	tests := []struct {
		name string
		opts []withlock.Option
	}{
		{"default logger", nil},
		{"logr.Discard()", []withlock.Option{withlock.WithLogger(logr.Discard())}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testenv.RuntimeLogCalls()
			l, err := withlock.NewForConfig(nowhere, "ns", append(tt.opts, withlock.WithLeftoverRemoval(-1))...)
			if err != nil {
				t.Fatalf("NewForConfig: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Errorf("Close: got %v, want nil", err)
			}
			if got := testenv.RuntimeLogCalls() - before; got != 0 {
				t.Errorf("got %d calls to controller-runtime's log.Log, want none", got)
			}
		})
	}
}
