package exchange

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/p2p"
)

// Fetch gets every block of cids and passes each to fn, in any order, from
// one goroutine at a time (fn may be nil). A block in the local store is
// taken from there. The others are asked of peers: first the nodes of
// where.Hosts (resolved and connected with p2p Connect) and where.Peers,
// up to Config.MaxPeers at once, each on one stream carrying successive
// want lists with at most MaxInflightPerPeer blocks unanswered; then, for
// what they could not supply, the DHT providers of where.Root. Every
// received block is verified against its CID (blocks.Verify) before
// anything else, stored in the local store (a cache: not pinned; Put is
// durable when it returns) and then passed to fn. A peer that sends bytes
// that do not hash to the CID asked, another block, an oversized or
// malformed frame, or nothing for RequestTimeout while it owes answers
// gets a strike and its wants move to other peers; one that answers
// have-not is not asked for that block again in this Fetch.
//
// Outcomes: nil when every block was passed to fn; fn's first error,
// wrapped, which stops the Fetch; an error wrapping blocks.ErrIntegrity
// if a CID is not a block CID (CIDv1 raw sha2-256), before any work; an
// error wrapping the store's error if the store fails; ErrClosed when the
// Exchange closes; otherwise an error wrapping blocks.ErrNotFound that
// says how many blocks (and the first few CIDs) could not be fetched and
// why: no peers to ask, every peer asked lacked them or failed, or ctx
// ended (then ctx's error is wrapped too). Fetch returns only after every
// goroutine it started has ended. Safe for concurrent use.
func (x *Exchange) Fetch(ctx context.Context, cids []cid.Cid, where Where, fn func(blocks.Block) error) error {
	if !x.enter() {
		return fmt.Errorf("exchange: fetch: %w", ErrClosed)
	}
	defer x.leave()
	ctx, cancel := x.opContext(ctx)
	defer cancel()
	return x.fetch(ctx, cids, where, fn)
}

// Get fetches one block (see Fetch) and returns its verified bytes.
// Safe for concurrent use.
func (x *Exchange) Get(ctx context.Context, c cid.Cid, where Where) ([]byte, error) {
	var data []byte
	err := x.Fetch(ctx, []cid.Cid{c}, where, func(b blocks.Block) error {
		data = b.Data
		return nil
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

// checkCID refuses CIDs that cannot name a block.
func checkCID(c cid.Cid) error {
	if !c.Defined() || c.Version() != 1 || c.Type() != cid.Raw || len(c.Bytes()) > maxCIDLen {
		return fmt.Errorf("exchange: fetch %s: not a CIDv1 raw sha2-256 block CID: %w", c, blocks.ErrIntegrity)
	}
	dm, err := mh.Decode(c.Hash())
	if err != nil || dm.Code != mh.SHA2_256 || dm.Length != 32 {
		return fmt.Errorf("exchange: fetch %s: not a sha2-256 CID: %w", c, blocks.ErrIntegrity)
	}
	return nil
}

// want is one block a fetch still needs, or got.
type want struct {
	c     cid.Cid
	tried []peer.ID // peers that answered have-not or failed while owing it
	done  bool
}

func (w *want) triedBy(p peer.ID) bool { return slices.Contains(w.tried, p) }

// session is a fetch's stream to one peer. The fetch loop owns assigned;
// queue and dead are shared with the session's goroutine under mu.
type session struct {
	p        peer.ID
	cancel   context.CancelFunc
	notify   chan struct{} // buffered 1: queue grew
	assigned int           // queued + in flight; owned by the fetch loop

	// mu guards queue.
	mu    sync.Mutex
	queue []cid.Cid // assigned, not yet sent
}

func (s *session) push(c cid.Cid) {
	s.mu.Lock()
	s.queue = append(s.queue, c)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// take removes up to n queued CIDs.
func (s *session) take(n int) []cid.Cid {
	s.mu.Lock()
	defer s.mu.Unlock()
	n = min(n, len(s.queue))
	if n == 0 {
		return nil
	}
	out := slices.Clone(s.queue[:n])
	s.queue = append(s.queue[:0], s.queue[n:]...)
	return out
}

type eventKind int

const (
	evBlock     eventKind = iota // a verified, stored block
	evHaveNot                    // the peer lacks c
	evEnd                        // the session ended; left goes back to pending
	evFatal                      // the local store failed: the fetch fails
	evProviders                  // a provider lookup finished
)

type event struct {
	kind      eventKind
	s         *session
	c         cid.Cid
	data      []byte
	err       error
	strike    bool
	left      []cid.Cid
	providers []peer.ID
}

// fetcher is one Fetch's state, owned by the goroutine running loop.
type fetcher struct {
	x     *Exchange
	ctx   context.Context
	fn    func(blocks.Block) error
	root  cid.Cid
	total int
	done  int

	wants      map[cid.Cid]*want
	pending    []*want // not assigned to any session
	alive      []*session
	candidates []peer.ID        // not yet asked, in order
	seen       map[peer.ID]bool // ever candidates (or self)
	struck     map[peer.ID]bool // candidates that had strikes
	lookup     int              // 0: not yet, 1: running, 2: done
	events     chan event
	wg         sync.WaitGroup // session and lookup goroutines

	// for the error message
	asked, haveNots, strikes, failures int
	lastErr                            error
	hostErrs                           []string
}

func (x *Exchange) fetch(ctx context.Context, cids []cid.Cid, where Where, fn func(blocks.Block) error) error {
	f := &fetcher{
		x: x, ctx: ctx, fn: fn, root: where.Root,
		wants: make(map[cid.Cid]*want, len(cids)), seen: map[peer.ID]bool{x.node.ID(): true}, struck: make(map[peer.ID]bool),
		events: make(chan event, 64),
	}
	var missing []*want
	for _, c := range cids {
		if _, dup := f.wants[c]; dup {
			continue
		}
		if err := checkCID(c); err != nil {
			return err
		}
		w := &want{c: c}
		f.wants[c] = w
		have, data, err := f.local(c)
		if err != nil {
			return err
		}
		if !have {
			missing = append(missing, w)
			continue
		}
		w.done = true
		f.done++
		if fn != nil {
			if err := fn(blocks.Block{CID: c, Data: data}); err != nil {
				return fmt.Errorf("exchange: fetch: %w", err)
			}
		}
	}
	f.total = len(f.wants)
	if len(missing) == 0 {
		return nil
	}
	f.pending = missing
	f.resolve(where)
	x.log.Debug("fetch", "blocks", f.total, "missing", len(missing), "candidates", len(f.candidates), "root", where.Root)
	defer func() {
		for _, s := range f.alive {
			s.cancel()
		}
		f.alive = nil
		f.wg.Wait()
	}()
	return f.loop()
}

// local looks c up in the store: with fn nil only its presence matters. A
// stored copy that fails its check is deleted and fetched again.
func (f *fetcher) local(c cid.Cid) (bool, []byte, error) {
	st := f.x.store
	if f.fn == nil {
		ok, err := st.Has(f.ctx, c)
		if err != nil {
			return false, nil, fmt.Errorf("exchange: fetch: local store: %w", err)
		}
		return ok, nil, nil
	}
	data, err := st.Get(f.ctx, c)
	switch {
	case err == nil:
		return true, data, nil
	case errors.Is(err, blocks.ErrNotFound):
		return false, nil, nil
	case errors.Is(err, blocks.ErrIntegrity):
		f.x.log.Warn("local block corrupt: fetching it again", "cid", c, "err", err)
		if err := st.Delete(f.ctx, c); err != nil {
			return false, nil, fmt.Errorf("exchange: fetch: local store: %w", err)
		}
		return false, nil, nil
	default:
		return false, nil, fmt.Errorf("exchange: fetch: local store: %w", err)
	}
}

// resolve turns where's hosts and peers into the ordered candidates:
// hosts, then peers, without duplicates or this node, those in back-off
// dropped and those with strikes moved last.
func (f *fetcher) resolve(where Where) {
	ids := make([]peer.ID, len(where.Hosts))
	errs := make([]error, len(where.Hosts))
	var wg sync.WaitGroup
	for i, h := range where.Hosts {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(f.ctx, f.x.cfg.RequestTimeout)
			defer cancel()
			ids[i], errs[i] = f.x.node.Connect(ctx, h)
		})
	}
	wg.Wait()
	var all []peer.ID
	for i, id := range ids {
		if errs[i] != nil {
			f.hostErrs = append(f.hostErrs, errs[i].Error())
			f.x.log.Debug("fetch: host unreachable", "host", where.Hosts[i], "err", errs[i])
			continue
		}
		all = append(all, id)
	}
	all = append(all, where.Peers...)
	f.addCandidates(all)
}

func (f *fetcher) addCandidates(ids []peer.ID) {
	var clean, struck []peer.ID
	for _, id := range ids {
		if id == "" || f.seen[id] {
			continue
		}
		f.seen[id] = true
		strikes, banned := f.x.standing(id)
		switch {
		case banned:
			f.x.log.Debug("fetch: peer in back-off, skipped", "peer", id)
		case strikes > 0:
			f.struck[id] = true
			struck = append(struck, id)
		default:
			clean = append(clean, id)
		}
	}
	f.candidates = append(append(f.candidates, clean...), struck...)
}

// loop runs the fetch until every block arrived or nothing more can be
// done.
func (f *fetcher) loop() error {
	for {
		if f.done == f.total {
			return nil
		}
		f.step()
		if f.hopeless() {
			return f.failure(nil)
		}
		select {
		case e := <-f.events:
			if err := f.handle(e); err != nil {
				return err
			}
		case <-f.ctx.Done():
			return f.failure(context.Cause(f.ctx))
		}
	}
}

// step closes sessions that can do nothing more, starts new ones, hands
// out pending wants and starts the provider lookup when only it can help.
func (f *fetcher) step() {
	// An idle session whose peer was already asked for every pending block
	// gives its slot to a candidate that can help, and goes back to the
	// end of the candidates (a want that another peer fails later may be
	// its to serve).
	if len(f.pending) > 0 && len(f.alive) >= f.x.cfg.MaxPeers && f.usefulCandidate() {
		f.alive = slices.DeleteFunc(f.alive, func(s *session) bool {
			if s.assigned > 0 || f.useful(s.p) {
				return false
			}
			s.cancel()
			f.candidates = append(f.candidates, s.p)
			return true
		})
	}
	f.startSome(false)
	stuck := f.assign()
	if stuck && f.startSome(true) {
		stuck = f.assign()
	}
	if stuck && !f.usefulCandidate() && f.lookup == 0 && f.root.Defined() {
		f.startLookup()
	}
}

// useful reports whether p was not yet asked for some pending want.
func (f *fetcher) useful(p peer.ID) bool {
	for _, w := range f.pending {
		if !w.triedBy(p) {
			return true
		}
	}
	return false
}

func (f *fetcher) usefulCandidate() bool {
	return slices.ContainsFunc(f.candidates, f.useful)
}

// hopeless reports whether pending wants remain that nothing under way
// or left to try can supply.
func (f *fetcher) hopeless() bool {
	if len(f.pending) == 0 || f.lookup == 1 {
		return false
	}
	for _, s := range f.alive {
		if s.assigned > 0 || f.useful(s.p) {
			return false
		}
	}
	return !f.usefulCandidate()
}

// startSome starts sessions with useful candidates while there is room
// and work. Peers with strikes come last in candidates, and are started
// only when no session is alive or when struck is set (the live ones
// cannot take some pending want). It reports whether it started any.
func (f *fetcher) startSome(struck bool) bool {
	started := false
	for i := 0; i < len(f.candidates) && len(f.pending) > 0 && len(f.alive) < f.x.cfg.MaxPeers; {
		p := f.candidates[i]
		if f.struck[p] && len(f.alive) > 0 && !struck {
			break
		}
		if !f.useful(p) {
			i++
			continue
		}
		f.candidates = slices.Delete(f.candidates, i, i+1)
		f.start(p)
		started = true
	}
	return started
}

// assign hands pending wants to sessions with room, the least loaded
// first, never to a peer that was already asked for the block. It reports
// whether some pending want can be taken by no live session.
func (f *fetcher) assign() (stuck bool) {
	limit := f.x.cfg.MaxInflightPerPeer
	kept := f.pending[:0]
	for i, w := range f.pending {
		var best *session
		room, eligible := false, false
		for _, s := range f.alive {
			if w.triedBy(s.p) {
				continue
			}
			eligible = true
			if s.assigned >= limit {
				continue
			}
			room = true
			if best == nil || s.assigned < best.assigned {
				best = s
			}
		}
		if !eligible {
			stuck = true
		}
		if best == nil {
			kept = append(kept, w)
			if !room && eligible && f.full() {
				kept = append(kept, f.pending[i+1:]...)
				break
			}
			continue
		}
		best.assigned++
		best.push(w.c)
	}
	clear(f.pending[len(kept):])
	f.pending = kept
	return stuck || (len(f.pending) > 0 && len(f.alive) == 0)
}

// full reports whether every live session is at its in-flight bound.
func (f *fetcher) full() bool {
	for _, s := range f.alive {
		if s.assigned < f.x.cfg.MaxInflightPerPeer {
			return false
		}
	}
	return true
}

func (f *fetcher) start(p peer.ID) {
	ctx, cancel := context.WithCancel(f.ctx)
	s := &session{p: p, cancel: cancel, notify: make(chan struct{}, 1)}
	f.alive = append(f.alive, s)
	f.asked++
	f.wg.Go(func() { f.run(ctx, s) })
}

func (f *fetcher) startLookup() {
	f.lookup = 1
	f.wg.Go(func() {
		ctx, cancel := context.WithTimeout(f.ctx, f.x.cfg.RequestTimeout)
		defer cancel()
		var ids []peer.ID
		for _, ai := range f.x.node.FindProviders(ctx, f.root, providerLimit) {
			ids = append(ids, ai.ID)
		}
		f.x.log.Debug("fetch: providers", "root", f.root, "found", len(ids))
		select {
		case f.events <- event{kind: evProviders, providers: ids}:
		case <-f.ctx.Done():
		}
	})
}

// handle applies one event; a non-nil error ends the fetch.
func (f *fetcher) handle(e event) error {
	switch e.kind {
	case evBlock:
		e.s.assigned--
		w := f.wants[e.c]
		if w == nil || w.done {
			return nil
		}
		w.done = true
		f.done++
		if f.fn != nil {
			if err := f.fn(blocks.Block{CID: e.c, Data: e.data}); err != nil {
				return fmt.Errorf("exchange: fetch: %w", err)
			}
		}
	case evHaveNot:
		e.s.assigned--
		f.haveNots++
		if w := f.wants[e.c]; w != nil && !w.done {
			w.tried = append(w.tried, e.s.p)
			f.pending = append(f.pending, w)
		}
	case evEnd:
		f.alive = slices.DeleteFunc(f.alive, func(s *session) bool { return s == e.s })
		e.s.cancel()
		f.lastErr = e.err
		if e.strike {
			f.strikes++
		} else {
			f.failures++
		}
		for _, c := range e.left {
			if w := f.wants[c]; w != nil && !w.done {
				w.tried = append(w.tried, e.s.p)
				f.pending = append(f.pending, w)
			}
		}
	case evFatal:
		return e.err
	case evProviders:
		f.lookup = 2
		f.addCandidates(e.providers)
	}
	return nil
}

// failure builds the error for the blocks that did not arrive.
func (f *fetcher) failure(cause error) error {
	var missing []string
	n := 0
	for _, w := range f.wants {
		if w.done {
			continue
		}
		if n < 3 {
			missing = append(missing, w.c.String())
		}
		n++
	}
	slices.Sort(missing)
	list := strings.Join(missing, ", ")
	if n > len(missing) {
		list += ", …"
	}
	var why string
	switch {
	case cause != nil:
		if errors.Is(cause, ErrClosed) {
			return fmt.Errorf("exchange: fetch: %d of %d blocks not fetched (%s): %w: %w", n, f.total, list, blocks.ErrNotFound, ErrClosed)
		}
		return fmt.Errorf("exchange: fetch: %d of %d blocks not fetched (%s): context ended after asking %d peers: %w: %w", n, f.total, list, f.asked, blocks.ErrNotFound, cause)
	case f.asked == 0:
		why = "no peers to ask: no host or peer given was reachable"
		if f.root.Defined() {
			why += " and no provider of " + f.root.String() + " was found"
		}
	default:
		why = fmt.Sprintf("all %d peers asked lacked them or failed (%d have-not answers, %d strikes, %d other failures", f.asked, f.haveNots, f.strikes, f.failures)
		if f.lastErr != nil {
			why += "; last: " + f.lastErr.Error()
		}
		why += ")"
	}
	if len(f.hostErrs) > 0 {
		why += "; hosts: " + strings.Join(f.hostErrs, "; ")
	}
	return fmt.Errorf("exchange: fetch: %d of %d blocks not fetched (%s): %s: %w", n, f.total, list, why, blocks.ErrNotFound)
}

// run is one session's goroutine: it opens a stream to s.p and, until ctx
// ends or the peer fails, sends the wants queued for it (at most
// MaxInflightPerPeer unanswered, MaxWantBatch per frame) and reads the
// answers, in order. Every answer and the session's end are reported as
// events; after evEnd it reports nothing more.
func (f *fetcher) run(ctx context.Context, s *session) {
	x := f.x
	cfg := &x.cfg
	var inflight []cid.Cid
	send := func(e event) bool {
		select {
		case f.events <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	end := func(err error, strike bool) {
		if ctx.Err() != nil {
			return // the fetch is over or dropped this session
		}
		if strike {
			x.strike(s.p, err)
		} else {
			x.count(s.p, func(st *PeerStat) { st.Failures++ })
		}
		left := append(inflight, s.take(math.MaxInt)...)
		x.log.Debug("fetch: session ended", "peer", s.p, "strike", strike, "left", len(left), "err", err)
		send(event{kind: evEnd, s: s, err: fmt.Errorf("peer %s: %w", s.p, err), strike: strike, left: left})
	}

	dctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	str, err := x.node.Host().NewStream(network.WithAllowLimitedConn(dctx, "blocktree blocks"), s.p, Protocol)
	cancel()
	if err != nil {
		end(fmt.Errorf("open stream: %w: %v", p2p.ErrUnreachable, err), false)
		return
	}
	defer context.AfterFunc(ctx, func() { _ = str.Reset() })()
	defer func() { _ = str.Reset() }()
	br := bufio.NewReaderSize(str, 64<<10)
	bw := bufio.NewWriterSize(str, 8<<10)
	var wbuf, body []byte
	for {
		if room := cfg.MaxInflightPerPeer - len(inflight); room > 0 {
			if batch := s.take(room); len(batch) > 0 {
				_ = str.SetWriteDeadline(time.Now().Add(cfg.RequestTimeout))
				for part := range slices.Chunk(batch, cfg.MaxWantBatch) {
					body = appendWant(body[:0], part)
					wbuf = appendFrame(wbuf[:0], ftWant, body)
					_, _ = bw.Write(wbuf)
				}
				if err := bw.Flush(); err != nil {
					inflight = append(inflight, batch...)
					end(fmt.Errorf("send wants: %w: %v", p2p.ErrUnreachable, err), isTimeout(err))
					return
				}
				inflight = append(inflight, batch...)
			}
		}
		if len(inflight) == 0 {
			select {
			case <-s.notify:
				continue
			case <-ctx.Done():
				return
			}
		}
		_ = str.SetReadDeadline(time.Now().Add(cfg.RequestTimeout))
		t, body, err := readFrame(br, nil)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, ErrProtocol):
				end(err, true)
			case isTimeout(err):
				end(fmt.Errorf("no answer within %v while owing %d blocks", cfg.RequestTimeout, len(inflight)), true)
			default:
				end(fmt.Errorf("read: %w: %v", p2p.ErrUnreachable, err), false)
			}
			return
		}
		next := inflight[0]
		switch t {
		case ftBlock:
			c, data, err := decodeBlock(body)
			if err != nil {
				end(err, true)
				return
			}
			if !c.Equals(next) {
				end(fmt.Errorf("%w: sent block %s when %s was due", ErrProtocol, c, next), true)
				return
			}
			if err := blocks.Verify(next, data); err != nil {
				end(fmt.Errorf("sent bad bytes: %w", err), true)
				return
			}
			inflight = inflight[1:]
			if err := x.store.Put(ctx, blocks.Block{CID: next, Data: data}); err != nil {
				if ctx.Err() == nil {
					send(event{kind: evFatal, err: fmt.Errorf("exchange: fetch: store %s: %w", next, err)})
				}
				return
			}
			x.count(s.p, func(st *PeerStat) { st.Blocks++; st.Bytes += int64(len(data)) })
			if !send(event{kind: evBlock, s: s, c: next, data: data}) {
				return
			}
		case ftHaveNot:
			c, err := decodeHaveNot(body)
			if err != nil {
				end(err, true)
				return
			}
			if !c.Equals(next) {
				end(fmt.Errorf("%w: have-not for %s when %s was due", ErrProtocol, c, next), true)
				return
			}
			inflight = inflight[1:]
			x.count(s.p, func(st *PeerStat) { st.HaveNots++ })
			if !send(event{kind: evHaveNot, s: s, c: next}) {
				return
			}
		case ftError:
			code, text, err := decodeError(body)
			if err != nil {
				end(err, true)
				return
			}
			end(remoteError(code, text), false)
			return
		default:
			end(fmt.Errorf("%w: unexpected %s frame", ErrProtocol, t), true)
			return
		}
	}
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
