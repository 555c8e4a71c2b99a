package exchange

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/paths"
)

// handleStream serves one inbound stream, on the goroutine libp2p starts
// for it: a run of want lists, one replication request, or one
// unreplication request, as its first frame says.
func (x *Exchange) handleStream(s network.Stream) {
	if !x.life.Enter() {
		_ = s.ResetWithError(network.StreamShutdown)
		return
	}
	defer x.life.Leave()
	remote := s.Conn().RemotePeer()
	bw := bufio.NewWriterSize(s, 16<<10)
	refuse := func(code errCode, why string) {
		x.log.Debug("stream refused", "peer", remote, "code", code, "why", why)
		_ = s.SetWriteDeadline(time.Now().Add(x.cfg.RequestTimeout))
		_, _ = bw.Write(appendFrame(nil, ftError, appendError(nil, code, why)))
		if bw.Flush() != nil {
			_ = s.Reset()
			return
		}
		_ = s.Close()
	}
	release, err := x.admitStream(remote)
	if err != nil {
		refuse(codeBusy, err.Error())
		return
	}
	defer release()

	ctx, cancel := context.WithCancel(x.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()

	from, err := x.authorise(ctx, remote)
	if err != nil {
		refuse(codeDenied, err.Error())
		return
	}
	br := bufio.NewReaderSize(s, 16<<10)
	_ = s.SetReadDeadline(time.Now().Add(serveIdle))
	t, body, err := readFrame(br, nil)
	if err != nil {
		if errors.Is(err, ErrProtocol) {
			refuse(codeBad, err.Error())
		} else {
			_ = s.Reset()
		}
		return
	}
	sv := &server{x: x, s: s, br: br, bw: bw, remote: remote, from: from}
	switch t {
	case ftWant:
		err = sv.serveWants(ctx, body)
	case ftReplicate:
		err = sv.serveReplicate(ctx, body)
	case ftUnrepl:
		err = sv.serveUnreplicate(ctx, body)
	default:
		err = fmt.Errorf("%w: a stream cannot start with a %s frame", ErrProtocol, t)
	}
	switch {
	case err == nil:
		_ = s.Close()
	case errors.Is(err, ErrProtocol):
		x.log.Debug("client broke the protocol", "peer", remote, "err", err)
		refuse(codeBad, err.Error())
	case errors.Is(err, errStoreFailed):
		x.log.Warn("serving blocks: store failed", "peer", remote, "err", err)
		refuse(codeInternal, err.Error())
	default:
		x.log.Debug("stream ended", "peer", remote, "err", err)
		_ = s.Reset()
	}
}

// errStoreFailed marks a failure of our store while serving.
var errStoreFailed = errors.New("store failed")

// admitStream takes one of ServeConcurrency turns and one of the peer's
// MaxPeerStreams, at once or not at all.
func (x *Exchange) admitStream(remote peer.ID) (release func(), err error) {
	select {
	case x.serveSlots <- struct{}{}:
	default:
		return nil, fmt.Errorf("node %s is serving %d streams (its ServeConcurrency); retry later: %w", x.node.Path(), x.cfg.ServeConcurrency, ErrBusy)
	}
	x.smu.Lock()
	if x.peerStreams[remote] >= x.cfg.MaxPeerStreams {
		x.smu.Unlock()
		<-x.serveSlots
		return nil, fmt.Errorf("node %s is serving %d streams to peer %s (its MaxPeerStreams); retry later: %w", x.node.Path(), x.cfg.MaxPeerStreams, remote, ErrBusy)
	}
	x.peerStreams[remote]++
	x.smu.Unlock()
	return func() {
		x.smu.Lock()
		if x.peerStreams[remote]--; x.peerStreams[remote] <= 0 {
			delete(x.peerStreams, remote)
		}
		x.smu.Unlock()
		<-x.serveSlots
	}, nil
}

// authorise returns remote's verified node path if it is of this node's
// domain. A proof still in flight is waited for, at most authWait.
func (x *Exchange) authorise(ctx context.Context, remote peer.ID) (paths.Path, error) {
	from, _, err := x.node.VerifiedPeer(doneCtx, remote)
	if err != nil {
		wctx, cancel := context.WithTimeout(ctx, authWait)
		from, _, err = x.node.VerifiedPeer(wctx, remote)
		cancel()
	}
	if err != nil {
		return paths.Path{}, fmt.Errorf("peer %s has not proven a path to %s: %v: %w", remote, x.node.Path(), err, ErrDenied)
	}
	if from.Root() != x.node.Path().Root() {
		return paths.Path{}, fmt.Errorf("%s is of another domain than %s: blocks are served within a domain only: %w", from, x.node.Path(), ErrDenied)
	}
	return from, nil
}

// doneCtx is an ended context: VerifiedPeer with it does not wait.
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// server is one inbound stream being served.
type server struct {
	x      *Exchange
	s      network.Stream
	br     *bufio.Reader
	bw     *bufio.Writer
	remote peer.ID
	from   paths.Path
}

// serveWants answers want lists until the client closes the stream: each
// CID in order with a block or a have-not frame. Three goroutines share
// the work: one reads want frames (readWants) while fewer than
// WireMaxWant CIDs are unanswered; a loader reads the wanted blocks from
// the store (which verifies them), at most serveReadAhead answers ahead;
// and this one writes the answers, flushing whenever the next one is not
// ready yet. So reading wants, hashing the next blocks and sending this
// one overlap.
func (sv *server) serveWants(ctx context.Context, body []byte) error {
	x := sv.x
	cs, err := decodeWant(body)
	if err != nil {
		return err
	}
	lctx, stop := context.WithCancel(ctx)
	ld := &loader{store: x.store, log: x.log, wake: make(chan struct{}, 1), room: make(chan struct{}, 1), out: make(chan answer, serveReadAhead)}
	ld.add(cs)
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		ld.run(lctx)
	}()
	readEnd := make(chan error, 1) // io.EOF once the client closed its side
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		readEnd <- sv.readWants(lctx, ld)
	}()
	defer func() {
		stop()
		_ = sv.s.SetReadDeadline(time.Now()) // unblocks readWants
		<-readDone
		<-loaded
	}()
	var hdr []byte
	var other []byte   // a stored block's bytes, for the "other" liar
	var clientEOF bool // the client closed its side: answer what is owed, then end
	for {
		if clientEOF && ld.unanswered() == 0 {
			return sv.bw.Flush()
		}
		var a answer
		select {
		case a = <-ld.out:
		default:
			if err := sv.bw.Flush(); err != nil {
				return err
			}
			select {
			case a = <-ld.out:
			case err := <-readEnd:
				if err != io.EOF {
					return err
				}
				clientEOF = true
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		ld.answered()
		if a.err != nil {
			return a.err
		}
		_ = sv.s.SetWriteDeadline(time.Now().Add(x.cfg.RequestTimeout))
		if x.liar != nil {
			if err := x.liar(ctx, lie{W: sv.bw, R: endReader(readDone), C: a.c, Data: a.data, Have: a.have, Other: func() []byte {
				if other == nil {
					other = x.otherBlock(ctx, a.c)
				}
				return other
			}}); err != nil {
				return err
			}
			continue
		}
		if !a.have {
			hdr = appendFrame(hdr[:0], ftHaveNot, appendCID(nil, a.c))
			if _, err := sv.bw.Write(hdr); err != nil {
				return err
			}
			continue
		}
		if err := writeBlock(sv.bw, &hdr, a.c, a.data); err != nil {
			return err
		}
		x.count(sv.remote, func(st *PeerStat) { st.Served++ })
	}
}

// readWants reads want frames and queues their CIDs on ld, waiting while
// WireMaxWant or more are unanswered. It returns io.EOF when the client
// closed its side, and otherwise the read error or protocol violation. A
// stream on which nothing is owed and nothing comes for serveIdle ends.
func (sv *server) readWants(ctx context.Context, ld *loader) error {
	var body []byte
	for {
		for ld.unanswered() >= WireMaxWant {
			select {
			case <-ld.room:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		_ = sv.s.SetReadDeadline(time.Now().Add(serveIdle))
		t, b, err := readFrame(sv.br, body[:0])
		switch {
		case err == nil:
		case isTimeout(err) && ctx.Err() == nil && ld.unanswered() > 0:
			continue // busy answering, not idle
		default:
			return err
		}
		body = b
		if t != ftWant {
			return fmt.Errorf("%w: a %s frame in a stream of want lists", ErrProtocol, t)
		}
		cs, err := decodeWant(body)
		if err != nil {
			return err
		}
		ld.add(cs)
	}
}

// endReader is what a liar reads from the stream: nothing, until the
// stream's want reader ended (the client went away).
type endReader <-chan struct{}

func (r endReader) Read([]byte) (int, error) {
	<-r
	return 0, io.EOF
}

// answer is what the loader found for one wanted CID: its bytes (have),
// or nothing (have-not), or the store's failure (err).
type answer struct {
	c    cid.Cid
	data []byte
	have bool
	err  error
}

// loader reads the blocks a server stream must answer with, in order, on
// its own goroutine (run), at most serveReadAhead answers ahead.
type loader struct {
	store blocks.Store
	log   *slog.Logger
	wake  chan struct{} // buffered 1: jobs grew
	room  chan struct{} // buffered 1: an answer was taken from out
	out   chan answer   // buffered serveReadAhead

	// mu guards jobs and owed.
	mu   sync.Mutex
	jobs []cid.Cid // not loaded yet
	owed int       // added and not yet taken from out
}

// add queues cs.
func (l *loader) add(cs []cid.Cid) {
	l.mu.Lock()
	l.jobs = append(l.jobs, cs...)
	l.owed += len(cs)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// answered records that one answer was taken from out.
func (l *loader) answered() {
	l.mu.Lock()
	l.owed--
	l.mu.Unlock()
	select {
	case l.room <- struct{}{}:
	default:
	}
}

// unanswered returns how many CIDs were added and not yet taken from out.
func (l *loader) unanswered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.owed
}

func (l *loader) next() (cid.Cid, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.jobs) == 0 {
		return cid.Undef, false
	}
	c := l.jobs[0]
	l.jobs = l.jobs[1:]
	if len(l.jobs) == 0 {
		l.jobs = nil
	}
	return c, true
}

// run loads the queued CIDs until ctx ends or the store fails (the
// failure is the last answer it sends).
func (l *loader) run(ctx context.Context) {
	for {
		c, ok := l.next()
		if !ok {
			select {
			case <-l.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		data, err := l.store.Get(ctx, c)
		a := answer{c: c, data: data, have: err == nil}
		switch {
		case a.have, errors.Is(err, blocks.ErrNotFound):
		case errors.Is(err, blocks.ErrIntegrity):
			l.log.Warn("stored block is corrupt: answering have-not", "cid", c, "err", err)
		case ctx.Err() != nil:
			return
		default:
			a.err = fmt.Errorf("get %s: %w: %w", c, errStoreFailed, err)
		}
		select {
		case l.out <- a:
		case <-ctx.Done():
			return
		}
		if a.err != nil {
			return
		}
	}
}

// writeBlock writes a block frame for c and data.
func writeBlock(w *bufio.Writer, hdr *[]byte, c cid.Cid, data []byte) error {
	cb := c.Bytes()
	h := appendHeader((*hdr)[:0], ftBlock, 1+len(cb)+len(data))
	h = append(append(h, byte(len(cb))), cb...)
	*hdr = h
	if _, err := w.Write(h); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// otherBlock returns the bytes of some stored block other than c (random
// bytes if there is none), for the "other" liar.
func (x *Exchange) otherBlock(ctx context.Context, c cid.Cid) []byte {
	for o, err := range x.store.All(ctx) {
		if err != nil {
			break
		}
		if o.Equals(c) {
			continue
		}
		if data, err := x.store.Get(ctx, o); err == nil {
			return data
		}
	}
	return randomBytes(1024)
}

// serveReplicate reads a whole replication request, pins its CIDs under
// "replica:"+pin (first, so that no garbage collection can take a block
// between its fetch and the pin), fetches what is missing from the
// requester (then from the DHT providers of the root), and acknowledges
// once every block is durably stored. It sends a progress frame every
// RequestTimeout/3 meanwhile, so that the requester can tell a slow
// replication from a dead peer. Then it announces the root, in the
// background.
func (sv *server) serveReplicate(ctx context.Context, body []byte) error {
	x := sv.x
	first, err := decodeReplicate(body)
	if err != nil {
		return err
	}
	cids := make([]cid.Cid, 0, min(first.Total, WireMaxWant))
	f := first
	for {
		cids = append(cids, f.CIDs...)
		if len(cids) > first.Total {
			return fmt.Errorf("%w: replicate: more than %d CIDs", ErrProtocol, first.Total)
		}
		if !f.More {
			break
		}
		_ = sv.s.SetReadDeadline(time.Now().Add(x.cfg.RequestTimeout))
		t, body, err := readFrame(sv.br, nil)
		if err != nil {
			return noEOF(err)
		}
		if t != ftReplicate {
			return fmt.Errorf("%w: a %s frame in a replication request", ErrProtocol, t)
		}
		if f, err = decodeReplicate(body); err != nil {
			return err
		}
		if f.Pin != first.Pin || f.Total != first.Total || !f.Root.Equals(first.Root) {
			return fmt.Errorf("%w: replicate: frames disagree on pin, root or total", ErrProtocol)
		}
	}
	if len(cids) != first.Total {
		return fmt.Errorf("%w: replicate: %d CIDs of %d announced", ErrProtocol, len(cids), first.Total)
	}
	for _, c := range cids {
		if err := checkCID(c); err != nil {
			return fmt.Errorf("%w: replicate: %w", ErrProtocol, err)
		}
	}
	name := replicaPrefix + first.Pin
	x.log.Info("replicating", "for", sv.from, "pin", name, "root", first.Root, "blocks", len(cids))

	// The requester does not write again: any read result (its reset when
	// it gives up, or a stray frame) cancels the replication.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_ = sv.s.SetReadDeadline(time.Time{})
	watch := make(chan struct{})
	go func() {
		defer close(watch)
		_, _ = sv.br.ReadByte()
		cancel()
	}()
	defer func() { _ = sv.s.SetReadDeadline(time.Now()); <-watch }()

	// wmu guards bw, done and the stream's writes.
	var wmu sync.Mutex
	done := 0
	tick := time.NewTicker(max(x.cfg.RequestTimeout/3, 10*time.Millisecond))
	defer tick.Stop()
	stopTicks := make(chan struct{})
	tickDone := make(chan struct{})
	go func() {
		defer close(tickDone)
		for {
			select {
			case <-tick.C:
			case <-stopTicks:
				return
			case <-rctx.Done():
				return
			}
			wmu.Lock()
			_ = sv.s.SetWriteDeadline(time.Now().Add(x.cfg.RequestTimeout))
			_, _ = sv.bw.Write(appendFrame(nil, ftProgress, appendProgress(nil, done, len(cids))))
			err := sv.bw.Flush()
			wmu.Unlock()
			if err != nil {
				cancel()
				return
			}
		}
	}()
	err = x.replicate(rctx, name, first.Root, cids, sv.remote, func() {
		wmu.Lock()
		done++
		wmu.Unlock()
	})
	close(stopTicks)
	<-tickDone
	if err != nil {
		x.log.Warn("replication failed", "for", sv.from, "pin", name, "err", err)
		if rctx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("replicate %s: the requester went away: %w", name, err)
		}
		_ = sv.s.SetWriteDeadline(time.Now().Add(x.cfg.RequestTimeout))
		_, _ = sv.bw.Write(appendFrame(nil, ftError, appendError(nil, codeFailed, err.Error())))
		return sv.bw.Flush()
	}
	_ = sv.s.SetWriteDeadline(time.Now().Add(x.cfg.RequestTimeout))
	_, _ = sv.bw.Write(appendFrame(nil, ftAck, nil))
	if err := sv.bw.Flush(); err != nil {
		return err
	}
	x.log.Info("replicated", "for", sv.from, "pin", name, "blocks", len(cids))
	if first.Root.Defined() {
		root := first.Root
		x.spawn(func() {
			pctx, cancel := context.WithTimeout(x.ctx, provideTimeout)
			defer cancel()
			if err := x.node.Provide(pctx, root); err != nil {
				x.log.Info("replica: announcing the root failed (it is stored and pinned)", "root", root, "err", err)
			}
		})
	}
	return nil
}

// replicate pins cids under name, then fetches what is missing from p
// (and the providers of root). If the fetch fails, a pin that did not
// exist before is removed again.
func (x *Exchange) replicate(ctx context.Context, name string, root cid.Cid, cids []cid.Cid, p peer.ID, progress func()) error {
	existed := false
	for _, err := range x.store.Pinned(ctx, name) {
		existed = err == nil || !errors.Is(err, blocks.ErrNotFound)
		break
	}
	if err := x.store.Pin(ctx, name, cids); err != nil {
		return fmt.Errorf("pin %s: %w", name, err)
	}
	err := x.fetch(ctx, cids, Where{Peers: []peer.ID{p}, Root: root}, func(blocks.Block) error {
		progress()
		return nil
	})
	if err != nil && !existed {
		if uerr := x.store.Unpin(context.WithoutCancel(ctx), name); uerr != nil {
			x.log.Warn("replica: cannot remove the pin of a failed replication", "pin", name, "err", uerr)
		}
	}
	return err
}

// serveUnreplicate removes a replica pin and acknowledges.
func (sv *server) serveUnreplicate(ctx context.Context, body []byte) error {
	pin, err := decodeUnrepl(body)
	if err != nil {
		return err
	}
	name := replicaPrefix + pin
	if err := sv.x.store.Unpin(ctx, name); err != nil {
		_ = sv.s.SetWriteDeadline(time.Now().Add(sv.x.cfg.RequestTimeout))
		_, _ = sv.bw.Write(appendFrame(nil, ftError, appendError(nil, codeFailed, fmt.Sprintf("unpin %s: %v", name, err))))
		return sv.bw.Flush()
	}
	sv.x.log.Info("replica dropped", "for", sv.from, "pin", name)
	_ = sv.s.SetWriteDeadline(time.Now().Add(sv.x.cfg.RequestTimeout))
	_, _ = sv.bw.Write(appendFrame(nil, ftAck, nil))
	return sv.bw.Flush()
}
