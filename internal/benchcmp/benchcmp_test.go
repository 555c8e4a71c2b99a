package benchcmp

import (
	"errors"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{[]time.Duration{5, 1, 3}, 3},
		{[]time.Duration{4, 1, 3, 2}, 2},
		{[]time.Duration{7}, 7},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestRun(t *testing.T) {
	var ours, anchor int
	r, err := Run("count", Options{Rounds: 3, Ops: 4}, func() error { ours++; return nil }, func() error { anchor++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	// Rounds is raised to 5; each side runs one warm-up plus 5 rounds of 4.
	if ours != 21 || anchor != 21 || r.Rounds != 5 || r.Ops != 4 {
		t.Fatalf("ran ours %d, anchor %d times; result %+v", ours, anchor, r)
	}
	boom := errors.New("boom")
	if _, err := Run("fail", Options{}, func() error { return boom }, func() error { return nil }); !errors.Is(err, boom) {
		t.Fatalf("Run with a failing side: %v", err)
	}
	if (Result{Ours: 2, Anchor: 4}).Ratio() != 2 {
		t.Fatal("Ratio is anchor/ours")
	}
}
