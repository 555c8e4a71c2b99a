package exchange

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/nettest"
)

func TestHedgeDelay(t *testing.T) {
	const floor, timeout = 200 * time.Millisecond, 10 * time.Second
	for _, tc := range []struct {
		name          string
		median, delay time.Duration
	}{
		{"no samples", 0, floor},
		{"fast peer", 5 * time.Millisecond, floor},
		{"4x median", 100 * time.Millisecond, 400 * time.Millisecond},
		{"capped at timeout/4", 5 * time.Second, timeout / 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hedgeDelay(floor, timeout, tc.median); got != tc.delay {
				t.Fatalf("hedgeDelay(%v, %v, %v) = %v, want %v", floor, timeout, tc.median, got, tc.delay)
			}
		})
	}
	if got := hedgeDelay(time.Second, time.Second, 0); got != time.Second {
		t.Errorf("a floor over timeout/4 wins: got %v", got)
	}
}

func TestAnswerTimesMedian(t *testing.T) {
	var a answerTimes
	for i := range 100 { // the ring keeps the last 32: 68..99 ms
		a.add(time.Duration(i) * time.Millisecond)
	}
	if a.median != 84*time.Millisecond {
		t.Fatalf("median %v, want 84ms", a.median)
	}
}

// slowLiar answers truthfully after delay, and counts the answers it
// delivered.
func slowLiar(delay time.Duration, answers *atomic.Int32) liar {
	return func(ctx context.Context, l lie) error {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		var err error
		if l.Have {
			err = writeBlock(l.W, new([]byte), l.C, l.Data)
		} else {
			_, err = l.W.Write(appendFrame(nil, ftHaveNot, appendCID(nil, l.C)))
		}
		if err == nil {
			err = l.W.Flush()
		}
		if err == nil {
			answers.Add(1) // delivered: the client had not reset the stream
		}
		return err
	}
}

// TestHedgedGet: a single-CID Get whose hosts are a silent peer (or the
// four liars) first and the honest holder last returns within a couple of
// seconds, far below RequestTimeout; the silent peer is struck at
// RequestTimeout all the same, after the Get returned.
func TestHedgedGet(t *testing.T) {
	const timeout = 3 * time.Second
	for _, tc := range []struct {
		name  string
		modes []string // the peers before the honest one
	}{
		{"silent", []string{"silent"}},
		{"liars", []string{"wrong", "other", "oversize", "silent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := nettest.NewDomain(t)
			ns := cluster(t, d, len(tc.modes)+2, Config{RequestTimeout: timeout})
			liars, honest, client := ns[:len(tc.modes)], ns[len(tc.modes)], ns[len(tc.modes)+1]
			blk := makeBlocks(t, 1, 4096)[0]
			var where Where
			for i, l := range liars {
				l.liar = testLiars[tc.modes[i]]
				put(t, l.store, makeBlocks(t, 1, 1024)) // for "other"
				where.Hosts = append(where.Hosts, l.node.Path())
			}
			put(t, honest.store, []blocks.Block{blk})
			where.Hosts = append(where.Hosts, honest.node.Path())
			ctx := nettest.Context(t, 30*time.Second)
			for _, n := range ns[:len(ns)-1] {
				if err := client.node.Host().Connect(ctx, n.node.AddrInfo()); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			data, err := client.Get(ctx, blk.CID, where)
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, blk.Data) {
				t.Fatal("wrong bytes")
			}
			t.Logf("Get took %v", took)
			if took > 2*time.Second {
				t.Errorf("Get took %v, want a couple of seconds at most (RequestTimeout %v)", took, timeout)
			}
			if st := statOf(client.Exchange, honest.node.ID()); st.Blocks != 1 || st.TotalStrikes != 0 {
				t.Errorf("honest peer: %+v", st)
			}
			silent := liars[len(liars)-1]
			if st := statOf(client.Exchange, silent.node.ID()); st.TotalStrikes != 0 || took >= timeout {
				t.Errorf("silent peer struck before RequestTimeout: %+v", st)
			}
			nettest.WaitFor(t, timeout+3*time.Second, "the silent peer's strike", func() bool {
				return statOf(client.Exchange, silent.node.ID()).TotalStrikes == 1
			})
			t.Logf("silent peer: %s", statOf(client.Exchange, silent.node.ID()).LastStrike)
		})
	}
}

// TestHedgeDuplicateNotPenalised: a slow but honest peer is asked first;
// the want is hedged to a second holder, whose block wins; the slow
// peer's late answer is dropped without a strike.
func TestHedgeDuplicateNotPenalised(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 3, Config{RequestTimeout: 5 * time.Second})
	slow, fast, client := ns[0], ns[1], ns[2]
	var answers atomic.Int32
	slow.liar = slowLiar(time.Second, &answers)
	blk := makeBlocks(t, 1, 4096)[0]
	put(t, slow.store, []blocks.Block{blk})
	put(t, fast.store, []blocks.Block{blk})
	ctx := nettest.Context(t, 30*time.Second)
	for _, n := range ns[:2] {
		if err := client.node.Host().Connect(ctx, n.node.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if _, err := client.Get(ctx, blk.CID, Where{Peers: []peer.ID{slow.node.ID(), fast.node.ID()}}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("Get took %v: not hedged before the slow peer answered", took)
	}
	if st := statOf(client.Exchange, fast.node.ID()); st.Blocks != 1 {
		t.Errorf("fast peer: %+v", st)
	}
	// The slow peer answers after a second: the client's session lingers
	// until then, drops the answer, and ends (closing the stream) without
	// a strike.
	nettest.WaitFor(t, 5*time.Second, "the slow peer's late answer", func() bool { return answers.Load() == 1 })
	nettest.WaitFor(t, 5*time.Second, "the lingering session's end", func() bool {
		slow.smu.Lock()
		defer slow.smu.Unlock()
		return slow.peerStreams[client.node.ID()] == 0
	})
	if st := statOf(client.Exchange, slow.node.ID()); st.TotalStrikes != 0 || st.Failures != 0 || st.Blocks != 0 {
		t.Errorf("slow peer penalised or counted for a dropped duplicate: %+v", st)
	}
}

// TestHedgeCopiesBounded: with MaxWantCopies 2 and two silent peers
// first, a want is held by both and not hedged to the third peer until
// one of them is struck at RequestTimeout.
func TestHedgeCopiesBounded(t *testing.T) {
	const timeout = 2 * time.Second
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 4, Config{RequestTimeout: timeout, MaxWantCopies: 2})
	s1, s2, honest, client := ns[0], ns[1], ns[2], ns[3]
	blk := makeBlocks(t, 1, 4096)[0]
	for _, n := range ns[:3] {
		put(t, n.store, []blocks.Block{blk})
	}
	s1.liar, s2.liar = testLiars["silent"], testLiars["silent"]
	ctx := nettest.Context(t, 30*time.Second)
	for _, n := range ns[:3] {
		if err := client.node.Host().Connect(ctx, n.node.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if _, err := client.Get(ctx, blk.CID, Where{Peers: []peer.ID{s1.node.ID(), s2.node.ID(), honest.node.ID()}}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("Get took %v", took)
	if took < timeout {
		t.Errorf("Get took %v: a third copy was sent before RequestTimeout (%v)", took, timeout)
	}
	if st := statOf(honest.Exchange, client.node.ID()); st.Served != 1 {
		t.Errorf("honest peer served %d blocks, want 1", st.Served)
	}
}
