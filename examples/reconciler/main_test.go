package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/leaselock/leaselock/internal/exampletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestReconciler runs the whole program, bounded: every entry is merged and
// no Lease is left (the program itself fails otherwise).
func TestReconciler(t *testing.T) {
	bin := exampletest.Build(t)
	out := exampletest.Run(t, bin, "--managers", "3", "--sources", "10", "--timeout", "60s")
	t.Logf("\n%s", out)
	if got := exampletest.Figure(t, out, "entries merged"); got != 10 {
		t.Errorf("entries merged: got %d, want 10", got)
	}
	if got := exampletest.Figure(t, out, "leases left"); got != 0 {
		t.Errorf("leases left: got %d, want 0", got)
	}
}
