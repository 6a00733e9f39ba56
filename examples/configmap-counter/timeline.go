package main

// The timeline of a run: the critical sections of every replica, one row
// each, drawn on a shared time axis in a terminal's width. Everything here
// is pure, so that the drawing can be tested without a cluster.

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// timelineColumns is how many columns of time a timeline has: with the
// labels and the frame around them, a row fits in 80.
const timelineColumns = 64

// Marks of a timeline.
const (
	markInside  = '#' // the replica was inside its critical section
	markOverlap = '^' // two replicas or more were inside at once
)

// span is one critical section of one replica, from the moment it was
// inside (the lock held, or about to read without it) to the moment its
// write returned. Its times are the replica's own clock, which all replicas
// on one machine share.
type span struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// timeline is the drawing of a run: rows[i] is replica i's row and
// overlapRow the row of the columns where two replicas or more were inside at once,
// each cols runes of inside or overlap marks and spaces. Column c covers
// the times t with from + c*step <= t < from + (c+1)*step, where step is
// (to-from)/cols.
type timeline struct {
	rows       []string
	overlapRow string
	from, to   time.Time
	cols       int
}

// drawTimeline draws the spans of every replica (spans[i] is replica i's)
// in cols columns, from the first start to the last end. A replica's row is
// marked in every column that one of its spans meets, and the overlap row in
// every column that the time when two replicas were both inside meets: two
// spans that only follow each other in one column mark that column in two
// rows, but not in the overlap row. Spans meet only when they share time: a
// span that ends as another starts does not overlap it.
func drawTimeline(spans [][]span, cols int) timeline {
	tl := timeline{cols: cols}
	first := true
	for _, ss := range spans {
		for _, s := range ss {
			if first || s.Start.Before(tl.from) {
				tl.from = s.Start
			}
			if first || s.End.After(tl.to) {
				tl.to = s.End
			}
			first = false
		}
	}
	for _, ss := range spans {
		tl.rows = append(tl.rows, tl.row(ss, markInside))
	}
	tl.overlapRow = tl.row(overlaps(spans), markOverlap)
	return tl
}

// row returns a row with mark in every column that one of spans meets.
func (tl timeline) row(spans []span, mark rune) string {
	row := []rune(strings.Repeat(" ", tl.cols))
	for _, s := range spans {
		first, last := tl.columns(s)
		for c := first; c <= last; c++ {
			row[c] = mark
		}
	}
	return string(row)
}

// columns returns the first and last columns that s meets: the column of
// its start, and the last column whose start is before its end. A span of
// no length meets the column of its start.
func (tl timeline) columns(s span) (first, last int) {
	total := int64(tl.to.Sub(tl.from))
	if total <= 0 {
		return 0, 0
	}
	cols := int64(tl.cols)
	start := int64(s.Start.Sub(tl.from)) * cols
	end := int64(s.End.Sub(tl.from)) * cols
	first = int(min(start/total, cols-1))
	last = int(min((end+total-1)/total-1, cols-1)) // ceil(end/total) - 1
	return first, max(first, last)
}

// overlaps returns the times when two replicas or more were inside at once,
// in order: a sweep over every start and end, in which an end comes before
// a start at the same instant.
func overlaps(spans [][]span) []span {
	type event struct {
		at    time.Time
		delta int // +1 a start, -1 an end
	}
	var events []event
	for _, ss := range spans {
		for _, s := range ss {
			if s.End.After(s.Start) {
				events = append(events, event{s.Start, +1}, event{s.End, -1})
			}
		}
	}
	slices.SortFunc(events, func(a, b event) int {
		return cmp.Or(a.at.Compare(b.at), cmp.Compare(a.delta, b.delta))
	})
	var out []span
	n := 0 // replicas inside
	for _, e := range events {
		n += e.delta
		switch {
		case e.delta > 0 && n == 2:
			out = append(out, span{Start: e.at})
		case e.delta < 0 && n == 1:
			out[len(out)-1].End = e.at
		}
	}
	return out
}

// print writes the timeline to w: a line that gives its scale, then a row
// per replica and the overlap row, each framed by bars.
func (tl timeline) print(w io.Writer) error {
	took := tl.to.Sub(tl.from)
	step := took / time.Duration(max(tl.cols, 1))
	if _, err := fmt.Fprintf(w, ">> critical sections over %v, one column = %v (%c inside, %c two or more at once)\n",
		took.Round(time.Millisecond), step.Round(100*time.Microsecond), markInside, markOverlap); err != nil {
		return err
	}
	labels := make([]string, 0, len(tl.rows)+1)
	for i := range tl.rows {
		labels = append(labels, fmt.Sprintf("replica %d", i))
	}
	labels = append(labels, "overlap")
	width := len(slices.MaxFunc(labels, func(a, b string) int { return cmp.Compare(len(a), len(b)) }))
	for i, row := range append(slices.Clone(tl.rows), tl.overlapRow) {
		if _, err := fmt.Fprintf(w, "  %-*s |%s|\n", width, labels[i], row); err != nil {
			return err
		}
	}
	return nil
}
