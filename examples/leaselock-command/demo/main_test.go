package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"github.com/leaselock/leaselock/internal/exampletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// leaselockPackage is the leaselock command, which the demo runs.
const leaselockPackage = "github.com/leaselock/leaselock/cmd/leaselock"

// buildLeaselock builds the leaselock command into a temporary folder and
// returns its path.
func buildLeaselock(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "leaselock")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("..", "..", "..", "cmd", "leaselock")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", leaselockPackage, err, out)
	}
	return bin
}

// summary returns the two figures, with leaselock and without, on the
// summary line that starts with label, and fails t when there is none.
func summary(t *testing.T, out, label string) (with, without int) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(label) + `\s+(\d+)\s+(\d+)\s*$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line with two figures in the summary:\n%s", label, out)
	}
	with, _ = strconv.Atoi(m[1])
	without, _ = strconv.Atoi(m[2])
	return with, without
}

// TestDemo runs the whole program with the leaselock command: under
// leaselock run no increment is lost and no Lease is left (the program
// fails otherwise); without it some are lost, which shows that the
// increments do overlap: each sleeps 20ms between its read and its write,
// and three processes that start together all read before any writes. The
// run is quiet: no line at error level, and no more than a screen.
func TestDemo(t *testing.T) {
	leaselock := buildLeaselock(t)
	bin := exampletest.Build(t)
	out := exampletest.Run(t, bin, "--leaselock", leaselock, "--procs", "3", "--increments", "5")
	t.Logf("\n%s", out)
	exampletest.CheckQuiet(t, out)
	if with, without := summary(t, out, "expected"); with != 15 || without != 15 {
		t.Errorf("expected: got %d and %d, want 15 and 15", with, without)
	}
	with, without := summary(t, out, "updates lost")
	if with != 0 {
		t.Errorf("updates lost with leaselock: got %d, want 0", with)
	}
	if without <= 0 {
		t.Errorf("updates lost without leaselock: got %d, want some", without)
	}
	if got := exampletest.Figure(t, out, "leases left"); got != 0 {
		t.Errorf("leases left: got %d, want 0", got)
	}
}

func TestBadFlags(t *testing.T) {
	tests := []struct {
		name string
		o    options
	}{
		{"no procs", options{procs: 0, increments: 1, namespace: "ns"}},
		{"negative increments", options{procs: 1, increments: -1, namespace: "ns"}},
		{"bad namespace", options{procs: 1, increments: 1, namespace: "Bad_NS"}},
		{"empty namespace", options{procs: 1, increments: 1, namespace: ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.o.validate(); err == nil {
				t.Errorf("validate(%+v): got nil, want an error", tt.o)
			}
		})
	}
	if err := (options{procs: 1, increments: 1, namespace: "ns"}).validate(); err != nil {
		t.Errorf("validate of good options: got %v, want nil", err)
	}
}

func TestShellJoin(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"leaselock", "run", "a", "-n", "ns", "--"}, "leaselock run a -n ns --"},
		{[]string{"sh", "-c", `n=$(cat "$F")`}, `sh -c 'n=$(cat "$F")'`},
		{[]string{"echo", "it's", ""}, `echo 'it'\''s' ''`},
	}
	for _, tt := range tests {
		if got := shellJoin(tt.args); got != tt.want {
			t.Errorf("shellJoin(%q): got %s, want %s", tt.args, got, tt.want)
		}
	}
}
