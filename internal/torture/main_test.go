package torture_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/leaselock/leaselock/internal/testenv"
)

// TestMain starts one control plane for the package's tests, except in a
// worker process (the test binary run again by a test, see
// TestWorkerProcess), which must not start a control plane of its own.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		goleak.VerifyTestMain(m, testenv.IgnoredGoroutines()...)
		return
	}
	goleak.VerifyTestMain(tableAfter{testenv.Main(m)}, testenv.IgnoredGoroutines()...)
}

// tableAfter runs the tests, then prints the figures of the run as the table
// of docs/reliability.md.
type tableAfter struct{ m goleak.TestingM }

func (t tableAfter) Run() int {
	code := t.m.Run()
	if s := figures.table(); s != "" {
		fmt.Print(s)
	}
	return code
}

// envInt reads a size of the run from the environment, or def.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a whole number of at least 1", name, s)
	}
	return n
}

// envRate reads a rate in [0, 1) from the environment, or def.
func envRate(t testing.TB, name string, def float64) float64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	r, err := strconv.ParseFloat(s, 64)
	if err != nil || r < 0 || r >= 1 {
		t.Fatalf("%s=%q: want a rate in [0, 1)", name, s)
	}
	return r
}

// figures collects what every test checked, for the table.
var figures = &summary{faults: map[string]int{}}

type summary struct {
	mu          sync.Mutex
	shape       string    // processes x goroutines x increments of the contention test
	histories   histories // of every test but TestTortureHA
	faults      map[string]int
	crashes     int
	takeovers   []time.Duration // from SIGKILL to the next holder's acquisition
	afterExpiry []time.Duration // from the crashed holder's Lease expiry to the same
	restarts    int
	downtime    []time.Duration
	doErrors    int // withlock calls that returned an error (faults, restarts)
	skewCases   int
	leaked      int
	ha          haSummary    // TestTortureHA's, a table of its own
	pause       pauseSummary // TestTorturePause's, another
	crashLeft   int          // Leases of crashed holders deleted at the end: allowed
}

func (s *summary) add(f func(s *summary)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *summary) table() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.histories.count == 0 && s.skewCases == 0 {
		return s.pause.table() + s.ha.table()
	}
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	fmt.Fprintf(&b, "\nreliability figures (docs/reliability.md)\n\n")
	row("figure", "value")
	row("---", "---")
	row("processes x goroutines x increments", orDash(s.shape))
	row("operations checked", strconv.Itoa(s.histories.ops))
	row("histories checked linearizable", fmt.Sprintf("%d of %d", s.histories.linearOK, s.histories.count))
	row("faults injected by kind", faultList(s.faults))
	row("withlock calls that returned an error", strconv.Itoa(s.doErrors))
	row("crashes (SIGKILL in the critical section)", strconv.Itoa(s.crashes))
	row("takeover after SIGKILL (max)", durList(s.takeovers))
	row("takeover after the Lease expired (max)", durList(s.afterExpiry))
	row("API server restarts survived", fmt.Sprintf("%d (down %s)", s.restarts, durList(s.downtime)))
	row("clock skew cases", strconv.Itoa(s.skewCases))
	row("overlaps found (must be 0)", strconv.Itoa(s.histories.overlaps))
	row("Leases leaked (must be 0)", strconv.Itoa(s.leaked))
	row("Leases of crashed holders deleted at the end", strconv.Itoa(s.crashLeft))
	return b.String() + s.pause.table() + s.ha.table()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// faultList lists the faults injected, every kind, in the order of
// allFaults: a kind never injected shows as 0.
func faultList(m map[string]int) string { return kindList(m, allFaults) }

// kindList lists the counts of m in the order of kinds, each kind, with
// their total first.
func kindList(m map[string]int, kinds []string) string {
	total := 0
	var parts []string
	for _, k := range kinds {
		total += m[k]
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return fmt.Sprintf("%d: %s", total, strings.Join(parts, ", "))
}

func durList(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	return slices.Max(ds).Round(time.Millisecond).String()
}
