package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// sample is a set of measured durations.
type sample []time.Duration

// pct is the p-th percentile (0 < p ≤ 100) by nearest rank: with fewer than
// 100 values, p99 is the largest.
func (s sample) pct(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// dur prints a duration with three significant digits in a readable unit.
func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < 0:
		return "-" + dur(-d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// p50p99 prints "p50 / p99 (n=N)".
func (s sample) p50p99() string {
	if len(s) == 0 {
		return "no samples"
	}
	return fmt.Sprintf("%s / %s (n=%d)", dur(s.pct(50)), dur(s.pct(99)), len(s))
}

// row is one line of the report's table.
type row struct {
	figure   string
	value    string
	baseline string
	ratio    string
	target   string
	// met is "yes", "no" or "" (no target).
	met string
}

// report is what a run measured: the set-up it ran with and one table.
type report struct {
	setup []string
	rows  []row
	// problems are checks that failed (missed or repeated steps, releases
	// that never completed): the quick test fails on them.
	problems []string
}

func (r *report) add(x row) { r.rows = append(r.rows, x) }

func (r *report) note(format string, args ...any) {
	r.setup = append(r.setup, fmt.Sprintf(format, args...))
}

func (r *report) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// ratio is a/b as "1.07×", and whether it is within limit.
func ratio(a, b time.Duration, limit float64) (string, string) {
	if b <= 0 {
		return "–", ""
	}
	q := float64(a) / float64(b)
	met := "no"
	if q <= limit {
		met = "yes"
	}
	return fmt.Sprintf("%.2f×", q), met
}

// within reports "yes" when d ≤ limit.
func within(d, limit time.Duration) string {
	if d <= limit {
		return "yes"
	}
	return "no"
}

// print writes the set-up lines and the table as Markdown.
func (r *report) print(w io.Writer) {
	for _, s := range r.setup {
		fmt.Fprintf(w, "- %s\n", s)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| figure | vane | baseline (same run) | ratio | target | met |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- |")
	for _, x := range r.rows {
		cells := []string{x.figure, x.value, x.baseline, x.ratio, x.target, x.met}
		for i, c := range cells {
			if c == "" {
				cells[i] = "–"
			}
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	if len(r.problems) > 0 {
		fmt.Fprintln(w)
		for _, p := range r.problems {
			fmt.Fprintf(w, "- PROBLEM: %s\n", p)
		}
	}
}
