package exchange

import (
	"container/heap"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Hedged requests. A want that one peer has held (queued or unanswered)
// for longer than that peer's hedge delay is also handed to another peer
// that was not asked for it, up to Config.MaxWantCopies peers at once. The
// first verified answer wins; the other copies are withdrawn if not yet
// sent, and their answers dropped without penalty if they were. The delay
// adapts to the peer: max(HedgeAfter, 4 × its median answer time), capped
// at max(HedgeAfter, RequestTimeout/4), so a peer that is merely busy is
// rarely second-guessed while a silent one costs a fetch a fraction of a
// second instead of RequestTimeout.

// answerSamples is how many recent answer times are kept per peer.
const answerSamples = 32

// hedgeFactor × a peer's median answer time is its hedge delay (at least
// HedgeAfter).
const hedgeFactor = 4

// answerTimes is a ring of one peer's recent answer times (from sending a
// want to reading its answer's frame header) and their median.
type answerTimes struct {
	ring   [answerSamples]time.Duration
	n      int // samples recorded, ever
	median time.Duration
}

func (a *answerTimes) add(d time.Duration) {
	a.ring[a.n%answerSamples] = d
	a.n++
	var s [answerSamples]time.Duration
	k := copy(s[:], a.ring[:min(a.n, answerSamples)])
	slices.Sort(s[:k])
	a.median = s[k/2]
}

// observe records that p answered a want after d. Safe for concurrent use.
func (x *Exchange) observe(p peer.ID, d time.Duration) {
	x.smu.Lock()
	defer x.smu.Unlock()
	a := x.answers[p]
	if a == nil {
		a = new(answerTimes)
		x.answers[p] = a
	}
	a.add(d)
}

// hedgeDelay returns how long a want may wait at p before it is also
// asked of another peer. Safe for concurrent use.
func (x *Exchange) hedgeDelay(p peer.ID) time.Duration {
	x.smu.Lock()
	var median time.Duration
	if a := x.answers[p]; a != nil {
		median = a.median
	}
	x.smu.Unlock()
	return hedgeDelay(x.cfg.HedgeAfter, x.cfg.RequestTimeout, median)
}

// hedgeDelay is max(floor, hedgeFactor × median), at most
// max(floor, timeout/4).
func hedgeDelay(floor, timeout, median time.Duration) time.Duration {
	return min(max(floor, hedgeFactor*median), max(floor, timeout/4))
}

// hedgeEntry says that w may be hedged at due, if w.due still is due
// then (entries are not removed when a want is reassigned or arrives:
// they are skipped when they surface).
type hedgeEntry struct {
	due time.Time
	w   *want
}

// hedgeQueue is a min-heap of hedge entries by due time.
type hedgeQueue []hedgeEntry

func (q hedgeQueue) Len() int           { return len(q) }
func (q hedgeQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q hedgeQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *hedgeQueue) Push(v any)        { *q = append(*q, v.(hedgeEntry)) }
func (q *hedgeQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = hedgeEntry{}
	*q = old[:len(old)-1]
	return e
}

// schedule records that w, just handed to a peer whose hedge delay is
// delay, may be hedged at now+delay.
func (f *fetcher) schedule(w *want, now time.Time, delay time.Duration) {
	if f.x.cfg.MaxWantCopies <= 1 {
		return
	}
	w.due = now.Add(delay)
	heap.Push(&f.hedges, hedgeEntry{due: w.due, w: w})
}

// hedgeable reports whether e still stands: its want is outstanding, not
// waiting for a peer already, held by fewer than MaxWantCopies peers, and
// not handed out again since e was scheduled.
func (f *fetcher) hedgeable(e hedgeEntry) bool {
	w := e.w
	return !w.done() && !w.queued && len(w.at) > 0 && len(w.at) < f.x.cfg.MaxWantCopies && w.due.Equal(e.due)
}

// hedgeDue queues the wants whose hedge time has come for one more peer.
func (f *fetcher) hedgeDue(now time.Time) {
	for len(f.hedges) > 0 && !f.hedges[0].due.After(now) {
		e := heap.Pop(&f.hedges).(hedgeEntry)
		if f.hedgeable(e) {
			f.hedged++
			f.queue(e.w)
		}
	}
}

// nextHedge returns when the next want may be hedged; false if none.
func (f *fetcher) nextHedge() (time.Time, bool) {
	for len(f.hedges) > 0 {
		if f.hedgeable(f.hedges[0]) {
			return f.hedges[0].due, true
		}
		heap.Pop(&f.hedges)
	}
	return time.Time{}, false
}
