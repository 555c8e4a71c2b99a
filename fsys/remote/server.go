package remote

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

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/lifecycle"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// Server defaults and fixed timings.
const (
	DefaultMaxStreams     = 256
	DefaultMaxPeerStreams = 32
	DefaultMaxPeerWatches = 16
	DefaultReprovide      = time.Hour

	// authWait bounds how long the server waits for a client's proof of
	// path, which may still be in flight on a new connection.
	authWait = 10 * time.Second
	// frameWait bounds each read of a request frame and each write of a
	// response frame.
	frameWait = time.Minute
	// provideRetry is the wait between announcements that failed (an
	// empty DHT at start).
	provideRetry = 10 * time.Second
)

// ServerConfig configures a Server. Zero fields get defaults.
type ServerConfig struct {
	// NodeID is this node's node principal: a volume's hosting writecap
	// must be held by it.
	NodeID paths.ID
	// MaxStreams bounds the streams served at once (default 256), and
	// MaxPeerStreams those of one peer (default 32); beyond them a stream
	// is refused as busy (the client sees fsys.ErrUnavailable).
	MaxStreams, MaxPeerStreams int
	// MaxPeerWatches bounds one peer's open Watch streams (default 16).
	MaxPeerWatches int
	// Reprovide is the interval between provider announcements of each
	// hosted volume (default 1 h; failed ones are retried every 10 s).
	Reprovide time.Duration
	// Verifier checks hosting writecaps; default a new one.
	Verifier *caps.Verifier
	Log      *slog.Logger
}

// Server serves the volumes this node hosts on Protocol, to verified
// peers: every peer of this node's domain, and peers of other domains
// that hold a readcap in the volume (reads) or present a writecap held by
// their node (commits). Unverified peers are refused. Create it with
// NewServer, add volumes with Add, run Serve to announce them, stop it
// with Close. All methods are safe for concurrent use.
type Server struct {
	node *p2p.Node
	cfg  ServerConfig
	log  *slog.Logger
	slot chan struct{} // MaxStreams

	// mu guards vols, peers and watches.
	mu      sync.Mutex
	vols    map[paths.Path]*volume
	peers   map[peer.ID]int
	watches map[peer.ID]int

	life lifecycle.Group // Serve and every stream being served

	nudge  chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

// volume is one hosted volume.
type volume struct {
	path     paths.Path
	host     fsys.Host
	hostcap  *caps.Writecap
	provided time.Time // last successful announcement
}

// NewServer registers Protocol's handler on node.
func NewServer(node *p2p.Node, cfg ServerConfig) *Server {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxStreams, DefaultMaxStreams)
	def(&cfg.MaxPeerStreams, DefaultMaxPeerStreams)
	def(&cfg.MaxPeerWatches, DefaultMaxPeerWatches)
	if cfg.Reprovide <= 0 {
		cfg.Reprovide = DefaultReprovide
	}
	if cfg.Verifier == nil {
		cfg.Verifier = caps.NewVerifier()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{node: node, cfg: cfg, log: cfg.Log.With("subsystem", "fs-remote"), slot: make(chan struct{}, cfg.MaxStreams),
		vols: make(map[paths.Path]*volume), peers: make(map[peer.ID]int), watches: make(map[peer.ID]int),
		nudge: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	node.Host().SetStreamHandler(Protocol, s.handle)
	return s
}

// Add serves h as the volume at vol. hostcap must be held by this node's
// key and cover vol (the hosting proof clients check); otherwise Add fails
// with an error wrapping the caps error and fsys.ErrPermission.
func (s *Server) Add(vol paths.Path, h fsys.Host, hostcap *caps.Writecap) error {
	if hostcap == nil {
		return fmt.Errorf("fs: host %s: no writecap: %w", vol, fsys.ErrPermission)
	}
	if err := s.cfg.Verifier.VerifyHolder(hostcap, s.cfg.NodeID, vol); err != nil {
		return fmt.Errorf("fs: host %s: this node's writecap does not cover it: %w: %w", vol, err, fsys.ErrPermission)
	}
	s.mu.Lock()
	s.vols[vol] = &volume{path: vol, host: h, hostcap: hostcap}
	s.mu.Unlock()
	select {
	case s.nudge <- struct{}{}:
	default:
	}
	s.log.Info("hosting volume", "volume", vol)
	return nil
}

// Remove stops serving vol.
func (s *Server) Remove(vol paths.Path) {
	s.mu.Lock()
	delete(s.vols, vol)
	s.mu.Unlock()
}

// Volume returns the host of vol when this node serves it.
func (s *Server) Volume(vol paths.Path) (fsys.Host, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vols[vol]
	if !ok {
		return nil, false
	}
	return v.host, true
}

// Volumes lists the volumes served.
func (s *Server) Volumes() []paths.Path {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]paths.Path, 0, len(s.vols))
	for p := range s.vols {
		out = append(out, p)
	}
	return out
}

// Serve announces every hosted volume in the DHT as a provider of its
// VolumeCID, at once (retrying every 10 s until it succeeds), then every
// Reprovide, until ctx ends or the server is closed. It returns nil then.
func (s *Server) Serve(ctx context.Context) error {
	if !s.life.Enter() {
		return nil
	}
	defer s.life.Leave()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.nudge:
		}
		next := s.cfg.Reprovide
		s.mu.Lock()
		var due []*volume
		for _, v := range s.vols {
			if time.Since(v.provided) >= s.cfg.Reprovide || v.provided.IsZero() {
				due = append(due, v)
			}
		}
		s.mu.Unlock()
		for _, v := range due {
			pctx, pcancel := context.WithTimeout(ctx, time.Minute)
			err := s.node.Provide(pctx, VolumeCID(v.path))
			pcancel()
			if err != nil {
				s.log.Debug("announcing volume failed; retrying", "volume", v.path, "err", err)
				next = min(next, provideRetry)
				continue
			}
			s.mu.Lock()
			v.provided = time.Now()
			s.mu.Unlock()
			s.log.Debug("volume announced", "volume", v.path)
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// Close removes the handler, ends every stream being served and waits
// for their goroutines. Idempotent.
func (s *Server) Close() error {
	s.life.Close(func() {
		s.node.Host().RemoveStreamHandler(Protocol)
		s.cancel()
	})
	return nil
}

// committerKey carries the committing peer in a Commit's context.
type committerKey struct{}

// Committer returns the peer whose Commit the context belongs to: a
// host's HaveBlocks fetches missing blocks from it.
func Committer(ctx context.Context) (peer.ID, bool) {
	id, ok := ctx.Value(committerKey{}).(peer.ID)
	return id, ok && id != ""
}

// FetchFunc fetches blocks from the given peers (exchange.Fetch with
// Where{Peers}).
type FetchFunc func(ctx context.Context, cids []cid.Cid, from []peer.ID) error

// HaveBlocks returns what a host's HaveBlocks hook does for remote
// commits: fetch the CIDs missing from the store from the committing peer
// (Committer(ctx)), and from anywhere fetch finds them otherwise.
func HaveBlocks(fetch FetchFunc) func(ctx context.Context, tx *fsys.Tx, missing []cid.Cid) error {
	return func(ctx context.Context, _ *fsys.Tx, missing []cid.Cid) error {
		if len(missing) == 0 {
			return nil
		}
		var from []peer.ID
		if id, ok := Committer(ctx); ok {
			from = append(from, id)
		}
		return fetch(ctx, missing, from)
	}
}

// handle serves one stream: one request, or one Watch.
func (s *Server) handle(st network.Stream) {
	if !s.life.Enter() {
		st.Reset()
		return
	}
	defer s.life.Leave()
	remote := st.Conn().RemotePeer()
	select {
	case s.slot <- struct{}{}:
		defer func() { <-s.slot }()
	default:
		s.refuse(st, kindBusy, fmt.Sprintf("node %s serves %d fs streams already; retry later", s.node.Path(), s.cfg.MaxStreams))
		return
	}
	s.mu.Lock()
	if s.peers[remote] >= s.cfg.MaxPeerStreams {
		s.mu.Unlock()
		s.refuse(st, kindBusy, fmt.Sprintf("node %s serves %d fs streams of peer %s already; retry later", s.node.Path(), s.cfg.MaxPeerStreams, remote))
		return
	}
	s.peers[remote]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.peers[remote]--; s.peers[remote] <= 0 {
			delete(s.peers, remote)
		}
		s.mu.Unlock()
	}()

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()

	actx, acancel := context.WithTimeout(ctx, authWait)
	from, node, err := s.node.VerifiedPeer(actx, remote)
	acancel()
	if err != nil {
		s.refuse(st, kindPermission, fmt.Sprintf("peer %s has not proven a blocktree path to %s: %v", remote, s.node.Path(), err))
		return
	}
	_ = st.SetReadDeadline(time.Now().Add(frameWait))
	br := bufio.NewReaderSize(st, 16<<10)
	b, err := readFrame(br, MaxFrame)
	if err != nil {
		if errors.Is(err, errProtocol) {
			s.refuse(st, kindProtocol, err.Error())
		} else {
			st.Reset()
		}
		return
	}
	q, err := decodeRequest(b)
	if err != nil {
		s.refuse(st, errKindOr(err, kindProtocol), err.Error())
		return
	}
	s.mu.Lock()
	v := s.vols[q.Vol]
	s.mu.Unlock()
	if v == nil {
		s.refuse(st, kindNoVolume, fmt.Sprintf("node %s does not host volume %s (a stale provider record?)", s.node.Path(), q.Vol))
		return
	}
	if q.Op == opCommit {
		if err := s.readTx(br, q); err != nil {
			s.refuse(st, errKindOr(err, kindProtocol), err.Error())
			return
		}
	}
	if k, why := s.admit(ctx, v, q, from, node); k != kindOK {
		s.refuse(st, k, why)
		return
	}
	log := s.log.With("peer", remote, "from", from, "volume", q.Vol, "op", opName(q.Op))
	if q.Op == opWatch {
		s.watch(ctx, st, br, v, q, remote, log)
		return
	}
	// The client half-closes after its request; a reset (or the end of
	// the connection) cancels the call.
	go func() {
		var one [1]byte
		if _, err := br.Read(one[:]); err != io.EOF {
			cancel()
		}
	}()
	_ = st.SetReadDeadline(time.Time{})
	if err := s.serve(ctx, st, v, q, remote); err != nil {
		log.Debug("fs call failed", "err", err)
		st.Reset()
		return
	}
	_ = st.Close()
}

// admit authorises a request of a verified peer (from, node).
func (s *Server) admit(ctx context.Context, v *volume, q *request, from paths.Path, node paths.ID) (uint8, string) {
	if from.Root() == s.node.Path().Root() {
		return kindOK, ""
	}
	switch q.Op {
	case opSync:
		// It reveals nothing and changes nothing; its fsync is shared
		// with the host's commits.
		return kindOK, ""
	case opCommit:
		if q.Tx.Writecap != nil && q.Tx.Writecap.Holder() == node {
			return kindOK, ""
		}
		return kindPermission, fmt.Sprintf("%s is in another domain and its commit carries no writecap held by its node %s", from, node)
	case opReadcaps:
		if q.Reader != node {
			return kindPermission, fmt.Sprintf("%s is in another domain: it may ask only for its own readcaps (of %s)", from, node)
		}
		return kindOK, ""
	}
	rcs, err := v.host.Readcaps(ctx, node)
	if err == nil && len(rcs) > 0 {
		return kindOK, ""
	}
	return kindPermission, fmt.Sprintf("%s is in another domain and holds no readcap in %s (have its owner run `bt grant read %s PATH`)", from, v.path, node)
}

// readTx reads the record frames of a Commit.
func (s *Server) readTx(br *bufio.Reader, q *request) error {
	total := 0
	for len(q.Tx.Put) < q.NPut {
		b, err := readFrame(br, MaxFrame)
		if err != nil {
			return fmt.Errorf("commit records: %v: %w", err, errProtocol)
		}
		if total += len(b); total > MaxTxBytes {
			return fmt.Errorf("a transaction of over %d bytes: %w", MaxTxBytes, fsys.ErrInvalid)
		}
		recs, err := decodeRecordsFrame(b)
		if err != nil {
			return err
		}
		if len(q.Tx.Put)+len(recs) > q.NPut {
			return fmt.Errorf("commit: more records than the %d announced: %w", q.NPut, errProtocol)
		}
		q.Tx.Put = append(q.Tx.Put, recs...)
	}
	return nil
}

// serve runs one non-Watch request and writes its answer.
func (s *Server) serve(ctx context.Context, st network.Stream, v *volume, q *request, remote peer.ID) error {
	h := v.host
	switch q.Op {
	case opInfo:
		vi, err := h.Info(ctx)
		if err != nil {
			return s.fail(st, err)
		}
		return s.send(st, &wireResponse{Info: &wireInfo{Path: vi.Path.String(), Root: uint64(vi.Root), Version: vi.Version,
			Host: vi.Host.String(), Hostcap: v.hostcap.Marshal()}})
	case opGet, opList:
		var (
			recs []fsys.Record
			err  error
		)
		if q.Op == opGet {
			recs, err = h.Get(ctx, q.At, q.Keys...)
		} else {
			recs, err = h.List(ctx, q.At, q.Dir)
		}
		if err != nil {
			return s.fail(st, err)
		}
		var frames []*wireResponse
		if err := batch(recs, func(ws []wireRecord) error {
			frames = append(frames, &wireResponse{Recs: ws, More: true})
			return nil
		}); err != nil {
			return s.fail(st, err)
		}
		if len(frames) == 0 {
			frames = append(frames, &wireResponse{})
		}
		frames[len(frames)-1].More = false
		for _, f := range frames {
			if err := s.send(st, f); err != nil {
				return err
			}
		}
		return nil
	case opCommit:
		cctx := context.WithValue(ctx, committerKey{}, remote)
		var ver uint64
		var err error
		if sy, ok := h.(fsys.Syncer); ok && q.NoSync {
			ver, err = sy.CommitNoSync(cctx, q.Tx)
		} else {
			ver, err = h.Commit(cctx, q.Tx)
		}
		if err != nil {
			return s.fail(st, err)
		}
		return s.send(st, &wireResponse{Ver: ver})
	case opSync:
		if sy, ok := h.(fsys.Syncer); ok {
			if err := sy.Sync(ctx, q.At); err != nil {
				return s.fail(st, err)
			}
		}
		return s.send(st, &wireResponse{})
	case opReadcaps:
		rcs, err := h.Readcaps(ctx, q.Reader)
		if err != nil {
			return s.fail(st, err)
		}
		for len(rcs) > 256 {
			if err := s.send(st, &wireResponse{Caps: encReadcaps(rcs[:256]), More: true}); err != nil {
				return err
			}
			rcs = rcs[256:]
		}
		return s.send(st, &wireResponse{Caps: encReadcaps(rcs)})
	case opLog:
		limit := q.Limit
		if limit <= 0 {
			limit = MaxLog
		}
		es, err := h.Log(ctx, q.Keys[0], limit)
		if err != nil {
			return s.fail(st, err)
		}
		if len(es) > limit {
			es = es[:limit]
		}
		return s.send(st, &wireResponse{Log: encodeLog(es)})
	}
	return s.fail(st, fmt.Errorf("unknown op %d: %w", q.Op, errProtocol))
}

// watch serves a Watch stream until the client closes it, the volume's
// channel closes or the server closes.
func (s *Server) watch(ctx context.Context, st network.Stream, br *bufio.Reader, v *volume, q *request, remote peer.ID, log *slog.Logger) {
	s.mu.Lock()
	if s.watches[remote] >= s.cfg.MaxPeerWatches {
		s.mu.Unlock()
		s.refuse(st, kindBusy, fmt.Sprintf("peer %s has %d watches open at %s already", remote, s.cfg.MaxPeerWatches, s.node.Path()))
		return
	}
	s.watches[remote]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.watches[remote]--; s.watches[remote] <= 0 {
			delete(s.watches, remote)
		}
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_ = st.SetReadDeadline(time.Time{})
	go func() { // any read ending (close or reset by the client) ends the watch
		var one [1]byte
		_, _ = br.Read(one[:])
		cancel()
	}()
	ch, err := v.host.Watch(ctx, q.After)
	if err != nil {
		_ = s.fail(st, err)
		st.Close()
		return
	}
	if err := s.send(st, &wireResponse{}); err != nil {
		st.Reset()
		return
	}
	maxKeys := (MaxFrame - 256) / keySize
	for c := range ch {
		keys := c.Keys
		for {
			n := min(len(keys), maxKeys)
			more := n < len(keys)
			if err := s.send(st, &wireResponse{Change: &wireChange{Version: c.Version, Keys: encKeys(keys[:n])}, More: more}); err != nil {
				log.Debug("watch ended", "err", err)
				st.Reset()
				return
			}
			keys = keys[n:]
			if !more {
				break
			}
		}
	}
	_ = st.Close()
}

// send writes one response frame.
func (s *Server) send(st network.Stream, r *wireResponse) error {
	b, err := encodeResponse(r)
	if err != nil {
		return err
	}
	_ = st.SetWriteDeadline(time.Now().Add(frameWait))
	return writeFrame(st, b)
}

// fail answers with err's kind and message.
func (s *Server) fail(st network.Stream, err error) error {
	if serr := s.send(st, &wireResponse{Kind: errKind(err), Msg: err.Error()}); serr != nil {
		return serr
	}
	return nil
}

// refuse answers with an error response and closes the stream.
func (s *Server) refuse(st network.Stream, k uint8, why string) {
	s.log.Debug("fs request refused", "peer", st.Conn().RemotePeer(), "kind", k, "why", why)
	if err := s.send(st, &wireResponse{Kind: k, Msg: why}); err != nil {
		st.Reset()
		return
	}
	_ = st.CloseWrite()
	// Let the client read the answer before the stream goes: wait for its
	// close (bounded), without reading what it still sends.
	_ = st.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(st, 64<<10))
	_ = st.Close()
}

// errKindOr returns err's kind when it wraps an fsys sentinel, else def.
func errKindOr(err error, def uint8) uint8 {
	if k := errKind(err); k != kindInternal {
		return k
	}
	return def
}
