package main

import (
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/leaselock/leaselock/internal/exampletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestReconciler runs the whole program, bounded: every entry is merged, no
// update of the registry met a Conflict (every writer takes the lock), and
// no Lease is left (the program itself fails otherwise). The run is quiet:
// no line at error level (the reconciles that the managers' stop cancels
// are no failure) and no more than a screen of output.
func TestReconciler(t *testing.T) {
	bin := exampletest.Build(t)
	out := exampletest.Run(t, bin, "--managers", "3", "--sources", "10", "--timeout", "60s",
		"--metrics-bind-address", freeAddr(t))
	t.Logf("\n%s", out)
	exampletest.CheckQuiet(t, out)
	if got := exampletest.Figure(t, out, "entries merged"); got != 10 {
		t.Errorf("entries merged: got %d, want 10", got)
	}
	if got := exampletest.Figure(t, out, "update conflicts"); got != 0 {
		t.Errorf("update conflicts: got %d, want 0", got)
	}
	if got := exampletest.Figure(t, out, "leases left"); got != 0 {
		t.Errorf("leases left: got %d, want 0", got)
	}
	// The metrics endpoint serves leaselock's metrics.
	if !strings.Contains(out, `leaselock_acquire_duration_seconds_count{result="acquired"}`) {
		t.Errorf("no leaselock_acquire_duration_seconds_count in the scraped metrics:\n%s", out)
	}
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
