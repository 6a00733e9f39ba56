package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/leaselock/leaselock/internal/exampletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCounter runs the whole program, as `make demo` does but shorter: with
// the lock no update is lost and no Lease is left; without it updates are
// lost, which shows that the replicas' increments do overlap. Three replicas
// of ten increments lost 16 and 17 in runs here; none lost would take every
// read to come after the last write, thirty times.
//
// The timeline after each summary is checked against the critical sections
// the replicas recorded (--sections): with the lock no two of them overlap
// and no column is marked as an overlap; without it the overlap marks are
// where two replicas were inside at once. Both runs are quiet: no line at
// error level, and no more than a screen of output.
func TestCounter(t *testing.T) {
	bin := exampletest.Build(t)
	sections := filepath.Join(t.TempDir(), "sections.json")
	out := exampletest.Run(t, bin, "--replicas", "3", "--increments", "10", "--sections", sections)
	t.Logf("with the lock:\n%s", out)
	if got, want := exampletest.Figure(t, out, "observed"), 30; got != want {
		t.Errorf("observed: got %d, want %d", got, want)
	}
	if got := exampletest.Figure(t, out, "leases left"); got != 0 {
		t.Errorf("leases left: got %d, want 0", got)
	}
	exampletest.CheckQuiet(t, out)
	spans := readSpans(t, sections, 3, 10)
	for i, a := range spans {
		for j, b := range spans[:i] {
			for _, x := range a {
				for _, y := range b {
					if x.Start.Before(y.End) && y.Start.Before(x.End) {
						t.Errorf("with the lock, replicas %d and %d were inside at once: %v and %v", i, j, x, y)
					}
				}
			}
		}
	}
	if marks := checkTimeline(t, out, spans); marks != 0 {
		t.Errorf("overlap marks with the lock: got %d, want 0", marks)
	}

	out = exampletest.Run(t, bin, "--replicas", "3", "--increments", "10", "--no-lock", "--sections", sections)
	t.Logf("without the lock:\n%s", out)
	if got := exampletest.Figure(t, out, "expected"); got != 30 {
		t.Errorf("expected: got %d, want 30", got)
	}
	if got := exampletest.Figure(t, out, "lost updates"); got <= 0 {
		t.Errorf("lost updates without the lock: got %d, want some", got)
	}
	exampletest.CheckQuiet(t, out)
	// An update is lost only where two replicas were inside at once.
	if marks := checkTimeline(t, out, readSpans(t, sections, 3, 10)); marks == 0 {
		t.Errorf("overlap marks without the lock: got none, want some")
	}
}

// readSpans reads the critical sections that --sections wrote to path, and
// fails t unless each of replicas has increments of them.
func readSpans(t *testing.T, path string, replicas, increments int) [][]span {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var spans [][]span
	if err := json.Unmarshal(data, &spans); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if len(spans) != replicas {
		t.Fatalf("replicas with sections: got %d, want %d", len(spans), replicas)
	}
	for i, ss := range spans {
		if len(ss) != increments {
			t.Errorf("replica %d: sections: got %d, want %d", i, len(ss), increments)
		}
	}
	return spans
}

// timelineRow is a row of the printed timeline: its label and its columns.
var timelineRow = regexp.MustCompile(`(?m)^  (replica \d+|overlap) +\|(.*)\|$`)

// checkTimeline checks the timeline printed in out against spans, column by
// column, and returns how many columns its overlap row marks. It computes
// what each column must show on its own, from the definition: column c of
// n covers [from + c*total/n, from + (c+1)*total/n) of the time from the
// first start to the last end; a replica's row marks it where one of the
// replica's spans shares time with it, the overlap row where the spans of
// two replicas share time with each other and with it.
func checkTimeline(t *testing.T, out string, spans [][]span) int {
	t.Helper()
	rows := timelineRow.FindAllStringSubmatch(out, -1)
	if len(rows) != len(spans)+1 {
		t.Fatalf("timeline rows: got %d, want %d replicas and the overlap row:\n%s", len(rows), len(spans), out)
	}
	from, to := spans[0][0].Start, spans[0][0].End
	for _, ss := range spans {
		for _, s := range ss {
			from, to = minTime(from, s.Start), maxTime(to, s.End)
		}
	}
	n := int64(len(rows[0][2]))
	total := int64(to.Sub(from))
	// meets reports whether [a, b) shares time with column c.
	meets := func(a, b time.Time, c int64) bool {
		return int64(a.Sub(from))*n < (c+1)*total && int64(b.Sub(from))*n > c*total
	}
	marks := 0
	for c := range n {
		for i, ss := range spans {
			want := slices.ContainsFunc(ss, func(s span) bool { return meets(s.Start, s.End, c) })
			if got := rows[i][2][c] == markInside; got != want {
				t.Errorf("replica %d, column %d: marked %v, want %v", i, c, got, want)
			}
		}
		want := false
		for i, a := range spans {
			for _, b := range spans[:i] {
				for _, x := range a {
					for _, y := range b {
						want = want || meets(maxTime(x.Start, y.Start), minTime(x.End, y.End), c) &&
							x.Start.Before(y.End) && y.Start.Before(x.End)
					}
				}
			}
		}
		got := rows[len(spans)][2][c] == markOverlap
		if got != want {
			t.Errorf("overlap row, column %d: marked %v, want %v", c, got, want)
		}
		if got {
			marks++
		}
	}
	return marks
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
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
		{"sections in a missing folder", options{replicas: 1, increments: 1, namespace: "ns", sections: "/nonexistent/sections.json"}},
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
