package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// base is the origin of the test spans; sp(a, b) is the span from a to b
// milliseconds after it.
var base = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func sp(a, b int) span {
	return span{Start: base.Add(time.Duration(a) * time.Millisecond), End: base.Add(time.Duration(b) * time.Millisecond)}
}

func TestDrawTimeline(t *testing.T) {
	tests := []struct {
		name    string
		spans   [][]span
		cols    int
		rows    []string
		overlap string
	}{
		{
			name:    "turns, a column each",
			spans:   [][]span{{sp(0, 5), sp(10, 15)}, {sp(5, 10), sp(15, 20)}},
			cols:    4,
			rows:    []string{"# # ", " # #"},
			overlap: "    ",
		},
		{
			// Both rows are marked in the column the handoff falls in, the
			// overlap row is not.
			name:    "turns within a column",
			spans:   [][]span{{sp(0, 3), sp(12, 20)}, {sp(3, 6)}},
			cols:    2,
			rows:    []string{"##", "# "},
			overlap: "  ",
		},
		{
			name:    "two inside at once",
			spans:   [][]span{{sp(0, 10)}, {sp(5, 15)}, {sp(15, 20)}},
			cols:    4,
			rows:    []string{"##  ", " ## ", "   #"},
			overlap: " ^  ",
		},
		{
			// The overlap is [9, 11): it meets column 1, which ends at 10,
			// and column 2.
			name:    "overlap across a column boundary",
			spans:   [][]span{{sp(0, 11)}, {sp(9, 20)}},
			cols:    4,
			rows:    []string{"### ", " ###"},
			overlap: " ^^ ",
		},
		{
			name:    "three at once, then two",
			spans:   [][]span{{sp(0, 40)}, {sp(10, 20)}, {sp(15, 30)}},
			cols:    4,
			rows:    []string{"####", " #  ", " ## "},
			overlap: " ^^ ",
		},
		{
			name:    "a span of no length",
			spans:   [][]span{{sp(0, 20)}, {sp(10, 10)}},
			cols:    4,
			rows:    []string{"####", "  # "},
			overlap: "    ",
		},
		{
			name:    "a replica without spans",
			spans:   [][]span{{sp(0, 20)}, nil},
			cols:    2,
			rows:    []string{"##", "  "},
			overlap: "  ",
		},
		{
			name:    "no spans at all",
			spans:   [][]span{nil, nil},
			cols:    3,
			rows:    []string{"   ", "   "},
			overlap: "   ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := drawTimeline(tt.spans, tt.cols)
			if !slices.Equal(tl.rows, tt.rows) {
				t.Errorf("rows: got %q, want %q", tl.rows, tt.rows)
			}
			if tl.overlapRow != tt.overlap {
				t.Errorf("overlap row: got %q, want %q", tl.overlapRow, tt.overlap)
			}
		})
	}
}

func TestOverlaps(t *testing.T) {
	tests := []struct {
		name  string
		spans [][]span
		want  []span
	}{
		{"none", [][]span{{sp(0, 5)}, {sp(6, 9)}}, nil},
		{"one ends as the other starts", [][]span{{sp(0, 5)}, {sp(5, 9)}}, nil},
		{"two", [][]span{{sp(0, 5)}, {sp(3, 9)}}, []span{sp(3, 5)}},
		{"one within another", [][]span{{sp(0, 10)}, {sp(2, 4)}}, []span{sp(2, 4)}},
		{"three, one stretch", [][]span{{sp(0, 10)}, {sp(2, 6)}, {sp(5, 12)}}, []span{sp(2, 10)}},
		{"two stretches", [][]span{{sp(0, 3), sp(5, 8)}, {sp(2, 6)}}, []span{sp(2, 3), sp(5, 6)}},
		{"the same replica's spans in any order", [][]span{{sp(5, 8), sp(0, 3)}, {sp(2, 6)}}, []span{sp(2, 3), sp(5, 6)}},
		{"a span of no length", [][]span{{sp(0, 10)}, {sp(4, 4)}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := overlaps(tt.spans); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPrintTimeline(t *testing.T) {
	tl := drawTimeline([][]span{{sp(0, 10)}, {sp(5, 20)}}, 4)
	var sb strings.Builder
	if err := tl.print(&sb); err != nil {
		t.Fatal(err)
	}
	want := `>> critical sections over 20ms, one column = 5ms (# inside, ^ two or more at once)
  replica 0 |##  |
  replica 1 | ###|
  overlap   | ^  |
`
	if got := sb.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
