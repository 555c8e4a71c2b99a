package exchange

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"blocktree.dev/bt/blocks"
)

// Fetch gets every block of cids and passes each to fn, in any order, from
// one goroutine at a time (fn may be nil). A block in the local store is
// taken from there. The others are asked of peers: first the nodes of
// where.Hosts (resolved and connected with p2p Connect) and where.Peers,
// up to Config.MaxPeers at once, each on one stream carrying successive
// want lists with at most MaxInflightPerPeer blocks unanswered; then, for
// what they could not supply, the DHT providers of where.Root. Every
// received block is verified against its CID before anything else (by
// the store's Put, which checks it before it stores anything: blocks.Store),
// stored in the local store (a cache: not pinned; Put is durable when it
// returns) and then passed to fn. A peer that sends bytes that do not
// hash to the CID asked, another block, an oversized or malformed frame,
// or nothing for RequestTimeout while it owes answers gets a strike and
// its wants move to other peers; one that answers have-not is not asked
// for that block again in this Fetch. A want that one peer holds for
// longer than its hedge delay (Config.HedgeAfter) is also asked of the
// next peer that was not asked for it, up to Config.MaxWantCopies peers;
// the first verified answer wins, later ones are dropped unpenalised.
//
// Outcomes: nil when every block was passed to fn; fn's first error,
// wrapped, which stops the Fetch; an error wrapping blocks.ErrIntegrity
// if a CID is not a block CID (CIDv1 raw sha2-256), before any work; an
// error wrapping the store's error if the store fails; ErrClosed when the
// Exchange closes; otherwise an error wrapping blocks.ErrNotFound that
// says how many blocks (and the first few CIDs) could not be fetched and
// why: no peers to ask, every peer asked lacked them or failed, or ctx
// ended (then ctx's error is wrapped too). Fetch never calls fn after it
// returned, and every goroutine it started has ended by then, except
// sessions that still owe answers after a successful Fetch (hedged
// wants): they linger on the Exchange until answered, or RequestTimeout of
// silence (a strike), or Close. Safe for concurrent use.
func (x *Exchange) Fetch(ctx context.Context, cids []cid.Cid, where Where, fn func(blocks.Block) error) error {
	if !x.life.Enter() {
		return fmt.Errorf("exchange: fetch: %w", ErrClosed)
	}
	defer x.life.Leave()
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

// want is one block a fetch still needs, or got. The fetch loop owns
// every field but got, which sessions read to drop duplicates.
type want struct {
	c      cid.Cid
	tried  []peer.ID  // peers that answered have-not or failed while owing it
	at     []*session // sessions holding it: queued, unanswered or being verified
	due    time.Time  // when it may also be asked of another peer (hedge.go)
	queued bool       // in fetcher.pending, waiting for a(nother) peer
	got    atomic.Bool
}

// done reports whether the block arrived (verified and stored).
func (w *want) done() bool { return w.got.Load() }

// eligible reports whether p may be asked for w: it did not answer
// have-not or fail for it, and does not hold it now.
func (w *want) eligible(p peer.ID) bool {
	return !slices.Contains(w.tried, p) && !slices.ContainsFunc(w.at, func(s *session) bool { return s.p == p })
}

// drop removes s from the holders of w.
func (w *want) drop(s *session) {
	if i := slices.Index(w.at, s); i >= 0 {
		w.at = slices.Delete(w.at, i, i+1)
	}
}

// session is a fetch's stream to one peer (session.go runs it). The fetch
// loop owns assigned and delay; queue is shared with the session's
// goroutines under mu.
type session struct {
	p        peer.ID
	cancel   context.CancelFunc
	notify   chan struct{} // buffered 1: queue grew
	linger   chan struct{} // closed when the fetch succeeded (see finish)
	exited   chan struct{} // closed when the session's goroutines have ended
	assigned int           // wants it holds: queued, unanswered or being verified
	delay    time.Duration // its hedge delay, refreshed by each assign

	// mu guards queue.
	mu    sync.Mutex
	queue []*want // assigned, not yet sent
}

func (s *session) push(w *want) {
	s.mu.Lock()
	s.queue = append(s.queue, w)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// take removes up to n queued wants.
func (s *session) take(n int) []*want {
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

// withdraw removes w from the queue if it was not sent yet, and reports
// whether it did.
func (s *session) withdraw(w *want) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.queue, w)
	if i < 0 {
		return false
	}
	s.queue = slices.Delete(s.queue, i, i+1)
	return true
}

type eventKind int

const (
	evBlock     eventKind = iota // a verified, stored block
	evDup                        // an answer for a block that had arrived from another peer, dropped
	evHaveNot                    // the peer lacks w
	evEnd                        // the session ended; left go back to pending
	evFatal                      // the local store failed: the fetch fails
	evProviders                  // a provider lookup finished
)

type event struct {
	kind      eventKind
	s         *session
	w         *want
	data      []byte
	err       error
	strike    bool
	left      []*want
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
	pending    []*want // waiting for a(nother) peer; may hold wants done since (skipped)
	hedges     hedgeQueue
	alive      []*session
	started    []*session       // every session started, to wait for
	candidates []peer.ID        // not yet asked, in order
	seen       map[peer.ID]bool // ever candidates (or self)
	struck     map[peer.ID]bool // candidates that had strikes
	lookup     int              // 0: not yet, 1: running, 2: done
	events     chan event
	wg         sync.WaitGroup // the lookup goroutine

	// for the error message and the log
	asked, haveNots, strikes, failures, hedged int
	lastErr                                    error
	hostErrs                                   []string
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
			w.queued = true
			missing = append(missing, w)
			continue
		}
		w.got.Store(true)
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
	err := f.loop()
	f.finish(err == nil)
	if f.hedged > 0 {
		x.log.Debug("fetch: hedged requests", "wants", f.hedged, "err", err)
	}
	return err
}

// finish ends the sessions and waits for them and the lookup. After a
// successful fetch, a session that still owes answers (for blocks that
// arrived from another peer: hedged wants) lingers instead: it sends no
// more wants, drops the answers it gets, and ends once it owes nothing,
// or strikes its peer after RequestTimeout of silence, or when the
// Exchange closes. So hedging does not hide a silent peer from the
// penalties. Every other session is cancelled and waited for.
func (f *fetcher) finish(success bool) {
	var wait []*session
	for _, s := range f.alive {
		if success && s.assigned > 0 {
			s.mu.Lock()
			s.queue = nil
			s.mu.Unlock()
			close(s.linger)
			continue
		}
		s.cancel()
	}
	lingering := func(s *session) bool {
		select {
		case <-s.linger:
			return true
		default:
			return false
		}
	}
	for _, s := range f.started {
		if !lingering(s) {
			s.cancel()
			wait = append(wait, s)
		}
	}
	for _, s := range wait {
		<-s.exited
	}
	f.alive = nil
	f.wg.Wait()
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
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		if f.done == f.total {
			return nil
		}
		f.hedgeDue(time.Now())
		f.step()
		if f.hopeless() {
			return f.failure(nil)
		}
		var wake <-chan time.Time
		if due, ok := f.nextHedge(); ok {
			timer.Reset(time.Until(due))
			wake = timer.C
		}
		select {
		case e := <-f.events:
			if err := f.handle(e); err != nil {
				return err
			}
		case <-wake:
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

// queue puts w in pending, to be handed to a(nother) peer.
func (f *fetcher) queue(w *want) {
	if w.queued || w.done() {
		return
	}
	w.queued = true
	f.pending = append(f.pending, w)
}

// requeue is for a want that a peer gave back (have-not, or its session
// ended): another peer gets it now if no peer holds it any more, or if it
// was due for a hedge already.
func (f *fetcher) requeue(w *want) {
	if len(w.at) == 0 || (f.x.cfg.MaxWantCopies > 1 && len(w.at) < f.x.cfg.MaxWantCopies && !time.Now().Before(w.due)) {
		f.queue(w)
	}
}

// useful reports whether p may be asked for some pending want.
func (f *fetcher) useful(p peer.ID) bool {
	for _, w := range f.pending {
		if !w.done() && w.eligible(p) {
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
// first, never to a peer that was already asked for the block or holds
// it. It reports whether some pending want can be taken by no live
// session. Wants done since they were queued are dropped here.
func (f *fetcher) assign() (stuck bool) {
	limit := f.x.cfg.MaxInflightPerPeer
	for _, s := range f.alive {
		s.delay = f.x.hedgeDelay(s.p)
	}
	now := time.Now()
	kept := f.pending[:0]
	for i, w := range f.pending {
		if w.done() {
			w.queued = false
			continue
		}
		var best *session
		room, eligible := false, false
		for _, s := range f.alive {
			if !w.eligible(s.p) {
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
		best.push(w)
		w.at = append(w.at, best)
		w.queued = false
		f.schedule(w, now, best.delay)
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

// start starts a session with p. Its goroutines belong to the Exchange
// (Close waits for them), so that a session may outlive a successful
// fetch while it lingers (see finish).
func (f *fetcher) start(p peer.ID) {
	ctx, cancel := context.WithCancel(f.x.ctx)
	s := &session{p: p, cancel: cancel, notify: make(chan struct{}, 1), linger: make(chan struct{}), exited: make(chan struct{})}
	f.alive = append(f.alive, s)
	f.started = append(f.started, s)
	f.asked++
	if !f.x.spawn(func() { f.run(ctx, s) }) {
		cancel()
		close(s.exited) // closing: the fetch's context ends too
	}
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

// release records that s no longer holds w.
func (f *fetcher) release(s *session, w *want) {
	s.assigned--
	w.drop(s)
}

// handle applies one event; a non-nil error ends the fetch.
func (f *fetcher) handle(e event) error {
	switch e.kind {
	case evBlock:
		f.release(e.s, e.w)
		w := e.w
		if w.done() {
			return nil // a copy from another peer was first
		}
		w.got.Store(true)
		f.done++
		// Withdraw the copies not sent yet.
		for _, o := range slices.Clone(w.at) {
			if o.withdraw(w) {
				f.release(o, w)
			}
		}
		if f.fn != nil {
			if err := f.fn(blocks.Block{CID: w.c, Data: e.data}); err != nil {
				return fmt.Errorf("exchange: fetch: %w", err)
			}
		}
	case evDup:
		f.release(e.s, e.w)
	case evHaveNot:
		f.release(e.s, e.w)
		f.haveNots++
		if w := e.w; !w.done() {
			w.tried = append(w.tried, e.s.p)
			f.requeue(w)
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
		for _, w := range e.left {
			w.drop(e.s)
			if !w.done() {
				w.tried = append(w.tried, e.s.p)
				f.requeue(w)
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
		if w.done() {
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
