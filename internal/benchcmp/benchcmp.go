// Package benchcmp compares an operation against a named anchor measured in
// the same run. The machines that run Blocktree's benchmarks are shared and
// noisy, so absolute times mean little; a ratio of medians over interleaved
// rounds means a lot more.
//
// Compare runs ours and the anchor in alternating rounds (ours, anchor,
// ours, anchor, …), times each round, and reports the median time per
// operation of each and their ratio, both as benchmark metrics and as one
// printed line:
//
//	bench sign: ours 1.23ms/op anchor 1.20ms/op ratio(anchor/ours) 0.98 (7 rounds x 50 ops)
//
// The ratio is anchor time over our time, so 1.0 is parity and larger is
// faster: "≥ 0.9×" in an issue means ratio ≥ 0.9.
package benchcmp

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// Options tunes a comparison. The zero value is usable.
type Options struct {
	// Rounds is how many timed rounds each side gets (default and minimum 5).
	Rounds int
	// Ops is how many operations one round times (default 100).
	Ops int
}

// Result is the outcome of a comparison.
type Result struct {
	Name         string
	Ours, Anchor time.Duration // median per operation
	Rounds, Ops  int
}

// Ratio is Anchor/Ours: 1 is parity, 2 means ours takes half the time.
func (r Result) Ratio() float64 {
	if r.Ours <= 0 {
		return 0
	}
	return float64(r.Anchor) / float64(r.Ours)
}

func (r Result) String() string {
	return fmt.Sprintf("bench %s: ours %v/op anchor %v/op ratio(anchor/ours) %.3f (%d rounds x %d ops, interleaved, medians)",
		r.Name, r.Ours, r.Anchor, r.Ratio(), r.Rounds, r.Ops)
}

// Run measures ours against anchor, interleaved, and returns the medians.
// Each function performs one operation; a non-nil error stops the run.
func Run(name string, opts Options, ours, anchor func() error) (Result, error) {
	if opts.Rounds < 5 {
		opts.Rounds = 5
	}
	if opts.Ops <= 0 {
		opts.Ops = 100
	}
	// One untimed warm-up operation each, so neither side pays for first use.
	if err := ours(); err != nil {
		return Result{}, fmt.Errorf("%s: ours: %w", name, err)
	}
	if err := anchor(); err != nil {
		return Result{}, fmt.Errorf("%s: anchor: %w", name, err)
	}
	round := func(f func() error) (time.Duration, error) {
		start := time.Now()
		for range opts.Ops {
			if err := f(); err != nil {
				return 0, err
			}
		}
		return time.Since(start) / time.Duration(opts.Ops), nil
	}
	var os, as []time.Duration
	for i := range opts.Rounds {
		// Alternate which side goes first so drift hits both equally.
		first, second := ours, anchor
		if i%2 == 1 {
			first, second = anchor, ours
		}
		d1, err := round(first)
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", name, err)
		}
		d2, err := round(second)
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", name, err)
		}
		if i%2 == 1 {
			d1, d2 = d2, d1
		}
		os = append(os, d1)
		as = append(as, d2)
	}
	return Result{Name: name, Ours: median(os), Anchor: median(as), Rounds: opts.Rounds, Ops: opts.Ops}, nil
}

// Compare is Run inside a benchmark. It runs its own rounds whatever b.N is,
// so run such benchmarks with -benchtime=1x; it reports ours-ns/op,
// anchor-ns/op and ratio as metrics and prints the result line.
func Compare(b *testing.B, name string, opts Options, ours, anchor func() error) Result {
	b.Helper()
	r, err := Run(name, opts, ours, anchor)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(r.Ours.Nanoseconds()), "ours-ns/op")
	b.ReportMetric(float64(r.Anchor.Nanoseconds()), "anchor-ns/op")
	b.ReportMetric(r.Ratio(), "ratio")
	fmt.Println(r)
	return r
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
