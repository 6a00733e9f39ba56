package main

import (
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/leaselock/leaselock/internal/exampletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCounter runs the whole program, as `make demo` does but shorter: with
// the lock no update is lost and no Lease is left; without it updates are
// lost, which shows that the replicas' increments do overlap. Three replicas
// of ten increments lost 16 and 17 in runs here; none lost would take every
// read to come after the last write, thirty times.
func TestCounter(t *testing.T) {
	bin := exampletest.Build(t)
	out := exampletest.Run(t, bin, "--replicas", "3", "--increments", "10")
	t.Logf("with the lock:\n%s", out)
	if got, want := exampletest.Figure(t, out, "observed"), 30; got != want {
		t.Errorf("observed: got %d, want %d", got, want)
	}
	if got := exampletest.Figure(t, out, "leases left"); got != 0 {
		t.Errorf("leases left: got %d, want 0", got)
	}

	out = exampletest.Run(t, bin, "--replicas", "3", "--increments", "10", "--no-lock")
	t.Logf("without the lock:\n%s", out)
	if got := exampletest.Figure(t, out, "expected"); got != 30 {
		t.Errorf("expected: got %d, want 30", got)
	}
	if got := exampletest.Figure(t, out, "lost updates"); got <= 0 {
		t.Errorf("lost updates without the lock: got %d, want some", got)
	}
}

// TestShellKubeconfigIsNotUsed runs the program with a KUBECONFIG in the
// test's environment that names no file: it is not passed on, and the run
// uses the local API server, as a test must never write to the cluster of
// the developer's shell.
func TestShellKubeconfigIsNotUsed(t *testing.T) {
	bin := exampletest.Build(t)
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "absent"))
	out := exampletest.Run(t, bin, "--replicas", "1", "--increments", "1")
	if got := exampletest.Figure(t, out, "observed"); got != 1 {
		t.Errorf("observed: got %d, want 1", got)
	}
}

func TestBadFlags(t *testing.T) {
	tests := []struct {
		name string
		o    options
	}{
		{"no replicas", options{replicas: 0, increments: 1, namespace: "ns"}},
		{"negative increments", options{replicas: 1, increments: -1, namespace: "ns"}},
		{"bad namespace", options{replicas: 1, increments: 1, namespace: "Bad_NS"}},
		{"empty namespace", options{replicas: 1, increments: 1, namespace: ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.o.validate(); err == nil {
				t.Errorf("validate(%+v): got nil, want an error", tt.o)
			}
		})
	}
	if err := (options{replicas: 1, increments: 1, namespace: "ns"}).validate(); err != nil {
		t.Errorf("validate of good options: got %v, want nil", err)
	}
}
