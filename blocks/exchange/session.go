package exchange

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/p2p"
)

// owed is a want sent to the peer and not answered yet.
type owed struct {
	w    *want
	sent time.Time
}

// arrival is a block frame's bytes for the want that was due, still to be
// verified and stored.
type arrival struct {
	w    *want
	data []byte
}

// lingering reports whether the fetch succeeded while s still owed
// answers (see fetcher.finish).
func (s *session) lingering() bool {
	select {
	case <-s.linger:
		return true
	default:
		return false
	}
}

// report sends e to the fetch loop. Once the fetch is over (s lingers) e
// is dropped; it reports false only if ctx ended first.
func (f *fetcher) report(ctx context.Context, s *session, e event) bool {
	select {
	case f.events <- e:
		return true
	case <-s.linger:
		return true
	case <-ctx.Done():
		return false
	}
}

// run is one session, on a goroutine of the Exchange: it opens a stream
// to s.p and, until ctx ends, the peer fails, or a lingering session owes
// nothing more, sends the wants queued for it (at most MaxInflightPerPeer
// unanswered, MaxWantBatch per frame) and reads the answers, in order
// (read). Block frames go to a second goroutine (verify) that checks and
// stores them while the first reads the next frames; at most verifyAhead
// wait between the two. Every answer and the session's end are reported
// as events; after evEnd it reports nothing more.
func (f *fetcher) run(ctx context.Context, s *session) {
	defer close(s.exited)
	defer s.cancel()
	x := f.x

	// The first of the two goroutines to fail says why and stops the
	// other through sctx.
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		// emu guards why, strike and fatal.
		emu    sync.Mutex
		why    error
		strike bool
		fatal  bool
	)
	fail := func(err error, st bool) {
		emu.Lock()
		if why == nil && !fatal {
			why, strike = err, st
		}
		emu.Unlock()
		stop()
	}
	storeFailed := func(err error) {
		emu.Lock()
		fatal = true
		emu.Unlock()
		f.report(ctx, s, event{kind: evFatal, err: err})
		stop()
	}

	var left []*want
	dctx, cancel := context.WithTimeout(sctx, x.cfg.RequestTimeout)
	str, err := x.node.Host().NewStream(network.WithAllowLimitedConn(dctx, "blocktree blocks"), s.p, Protocol)
	cancel()
	if err != nil {
		fail(fmt.Errorf("open stream: %w: %v", p2p.ErrUnreachable, err), false)
	} else {
		stopReset := context.AfterFunc(sctx, func() { _ = str.Reset() })
		verq := make(chan arrival, verifyAhead)
		unreported := make(chan []*want, 1)
		go func() { unreported <- f.verify(ctx, sctx, s, verq, fail, storeFailed) }()
		inflight := f.read(sctx, s, str, verq, fail)
		close(verq)
		left = <-unreported
		stopReset()
		_ = str.Reset()
		for _, o := range inflight {
			left = append(left, o.w)
		}
	}
	if ctx.Err() != nil {
		return // the fetch dropped this session, or the Exchange closed
	}
	emu.Lock()
	err, st := why, strike
	if fatal {
		err = nil
	}
	emu.Unlock()
	if err == nil {
		return // a lingering session owes nothing more; or the store failed
	}
	if st {
		x.strike(s.p, err)
	} else {
		x.count(s.p, func(st *PeerStat) { st.Failures++ })
	}
	left = append(left, s.take(math.MaxInt)...)
	x.log.Debug("fetch: session ended", "peer", s.p, "strike", st, "left", len(left), "lingering", s.lingering(), "err", err)
	f.report(ctx, s, event{kind: evEnd, s: s, err: fmt.Errorf("peer %s: %w", s.p, err), strike: st, left: left})
}

// read sends s's wants and reads the answers until ctx ends, the peer
// fails (fail), or a lingering session owes nothing more. It passes block
// frames to verq and reports have-nots itself. It returns the wants sent
// and not passed on or reported.
func (f *fetcher) read(ctx context.Context, s *session, str network.Stream, verq chan<- arrival, fail func(error, bool)) []owed {
	x := f.x
	cfg := &x.cfg
	br := bufio.NewReaderSize(str, 64<<10)
	bw := bufio.NewWriterSize(str, 8<<10)
	var inflight []owed
	var wbuf, body []byte
	var cs []cid.Cid
	for {
		lingering := s.lingering()
		if room := cfg.MaxInflightPerPeer - len(inflight); room > 0 && !lingering {
			if batch := s.take(room); len(batch) > 0 {
				_ = str.SetWriteDeadline(time.Now().Add(cfg.RequestTimeout))
				for part := range slices.Chunk(batch, cfg.MaxWantBatch) {
					cs = cs[:0]
					for _, w := range part {
						cs = append(cs, w.c)
					}
					body = appendWant(body[:0], cs)
					wbuf = appendFrame(wbuf[:0], ftWant, body)
					_, _ = bw.Write(wbuf)
				}
				now := time.Now()
				for _, w := range batch {
					inflight = append(inflight, owed{w: w, sent: now})
				}
				if err := bw.Flush(); err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("send wants: %w: %v", p2p.ErrUnreachable, err), isTimeout(err))
					}
					return inflight
				}
			}
		}
		if len(inflight) == 0 {
			if lingering {
				return nil
			}
			select {
			case <-s.notify:
			case <-s.linger:
			case <-ctx.Done():
				return nil
			}
			continue
		}
		_ = str.SetReadDeadline(time.Now().Add(cfg.RequestTimeout))
		t, fb, err := readFrame(br, nil)
		if err != nil {
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, ErrProtocol):
				fail(err, true)
			case isTimeout(err):
				fail(fmt.Errorf("no answer within %v while owing %d blocks", cfg.RequestTimeout, len(inflight)), true)
			default:
				fail(fmt.Errorf("read: %w: %v", p2p.ErrUnreachable, err), false)
			}
			return inflight
		}
		next := inflight[0]
		switch t {
		case ftBlock:
			c, data, err := decodeBlock(fb)
			if err != nil {
				fail(err, true)
				return inflight
			}
			if !c.Equals(next.w.c) {
				fail(fmt.Errorf("%w: sent block %s when %s was due", ErrProtocol, c, next.w.c), true)
				return inflight
			}
			x.observe(s.p, time.Since(next.sent))
			select {
			case verq <- arrival{w: next.w, data: data}:
			case <-ctx.Done():
				return inflight
			}
		case ftHaveNot:
			c, err := decodeHaveNot(fb)
			if err != nil {
				fail(err, true)
				return inflight
			}
			if !c.Equals(next.w.c) {
				fail(fmt.Errorf("%w: have-not for %s when %s was due", ErrProtocol, c, next.w.c), true)
				return inflight
			}
			x.observe(s.p, time.Since(next.sent))
			x.count(s.p, func(st *PeerStat) { st.HaveNots++ })
			if !f.report(ctx, s, event{kind: evHaveNot, s: s, w: next.w}) {
				return inflight
			}
		case ftError:
			code, text, err := decodeError(fb)
			if err != nil {
				fail(err, true)
			} else {
				fail(remoteError(code, text), false)
			}
			return inflight
		default:
			fail(fmt.Errorf("%w: unexpected %s frame", ErrProtocol, t), true)
			return inflight
		}
		inflight = inflight[1:]
	}
}

// verify checks each block that read passes on against its CID and
// stores it (durably), both by the store's Put, which refuses bytes that
// do not hash to the CID; then it reports it; in order. Bytes that Put
// refuses and that fail blocks.Verify are a lie (strike); any other Put
// failure is the store's, and fails the fetch. An answer for a block that has
// arrived from another peer meanwhile (a hedged want) is dropped
// unchecked and without penalty. Once sctx ends it only collects the
// rest. It returns the wants it did not report.
func (f *fetcher) verify(ctx, sctx context.Context, s *session, verq <-chan arrival, fail func(error, bool), storeFailed func(error)) []*want {
	x := f.x
	var left []*want
	for a := range verq {
		w := a.w
		switch {
		case sctx.Err() != nil:
			left = append(left, w)
			continue
		case w.done():
			if !f.report(ctx, s, event{kind: evDup, s: s, w: w}) {
				left = append(left, w)
			}
			continue
		}
		// Put checks the bytes against the CID before it stores anything
		// (blocks.Store), so the block is hashed once here, not twice.
		if err := x.store.Put(ctx, blocks.Block{CID: w.c, Data: a.data}); err != nil {
			switch verr := blocks.Verify(w.c, a.data); {
			case verr != nil:
				fail(fmt.Errorf("sent bad bytes: %w", verr), true)
			case ctx.Err() == nil:
				storeFailed(fmt.Errorf("exchange: fetch: store %s: %w", w.c, err))
			}
			left = append(left, w)
			continue
		}
		x.count(s.p, func(st *PeerStat) { st.Blocks++; st.Bytes += int64(len(a.data)) })
		if !f.report(ctx, s, event{kind: evBlock, s: s, w: w, data: a.data}) {
			left = append(left, w)
		}
	}
	return left
}

// remoteError maps an error frame to our sentinels.
func remoteError(code errCode, text string) error {
	var base error
	switch code {
	case codeDenied:
		base = ErrDenied
	case codeBusy:
		base = ErrBusy
	case codeBad:
		base = ErrProtocol
	case codeClosed:
		base = p2p.ErrUnreachable
	default:
		base = ErrReplicate
	}
	return fmt.Errorf("%w: the peer says: %s", base, text)
}
