package remote

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// Protocol is the libp2p protocol of remote volume hosts.
const Protocol = protocol.ID("/blocktree/fs/1.0.0")

// Default bounds of one call whose context has no deadline.
const (
	DefaultCallTimeout   = time.Minute
	DefaultCommitTimeout = 10 * time.Minute
	// watchIdle bounds how long a Watch stream waits for a write to the
	// server (a slow link); reads wait until ctx ends.
	watchBuffer = 16
)

// Client is a remote volume host: an fsys.Host whose calls travel on
// Protocol streams to the node that hosts the volume, one stream per call
// (Watch keeps its stream open). Make it with Dial or a Locator. When the
// host cannot be reached it re-locates the volume once (the host may have
// restarted with a new peer ID) before failing with fsys.ErrUnavailable.
// All methods are safe for concurrent use.
type Client struct {
	node     *p2p.Node
	vol      paths.Path
	verifier *caps.Verifier
	relocate func(ctx context.Context) (peer.ID, error) // may be nil

	// syncAll: the host predates CommitNoSync and Sync (it refused one);
	// every commit to it is durable.
	syncAll atomic.Bool

	// mu guards peer and host.
	mu   sync.Mutex
	peer peer.ID
	host paths.Path // the host's verified node path
}

// Dial checks that peer id hosts vol — its Info answer must carry a
// writecap that covers vol and is held by the node key the connection
// verified (the hosting proof) — and returns a Client for it with the
// volume's info. Errors: fsys.ErrUnavailable (unreachable, or it does not
// host vol), fsys.ErrPermission (the proof fails, or the host refuses us).
func Dial(ctx context.Context, node *p2p.Node, id peer.ID, vol paths.Path, v *caps.Verifier) (*Client, fsys.VolumeInfo, error) {
	if v == nil {
		v = caps.NewVerifier()
	}
	c := &Client{node: node, vol: vol, verifier: v, peer: id}
	vi, err := c.Info(ctx)
	if err != nil {
		return nil, vi, err
	}
	return c, vi, nil
}

// Volume is the volume's path.
func (c *Client) Volume() paths.Path { return c.vol }

// Peer is the host's current peer ID and its verified node path (zero
// until an Info succeeded).
func (c *Client) Peer() (peer.ID, paths.Path) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peer, c.host
}

// Info returns the volume's info after checking the hosting proof.
func (c *Client) Info(ctx context.Context) (fsys.VolumeInfo, error) {
	var (
		vi fsys.VolumeInfo
		hc *caps.Writecap
	)
	id, err := c.call(ctx, &request{Op: opInfo}, nil, func(r *wireResponse) (bool, error) {
		if r.Info == nil {
			return false, fmt.Errorf("info answer without info: %w", errProtocol)
		}
		var err error
		vi, hc, err = decodeInfo(r.Info)
		return false, err
	})
	if err != nil {
		return vi, err
	}
	if err := c.checkHosting(ctx, id, vi, hc); err != nil {
		return fsys.VolumeInfo{}, err
	}
	return vi, nil
}

// checkHosting verifies the hosting proof of peer id for vi.
func (c *Client) checkHosting(ctx context.Context, id peer.ID, vi fsys.VolumeInfo, hc *caps.Writecap) error {
	if vi.Path != c.vol {
		return fmt.Errorf("fs: peer %s answered for volume %s, not %s: %w", id, vi.Path, c.vol, fsys.ErrUnavailable)
	}
	path, node, err := c.node.VerifiedPeer(ctx, id)
	if err != nil {
		return fmt.Errorf("fs: host of %s: %v: %w", c.vol, err, fsys.ErrUnavailable)
	}
	if vi.Host != path {
		return fmt.Errorf("fs: host of %s claims to be %s but proved %s: %w", c.vol, vi.Host, path, fsys.ErrPermission)
	}
	if err := c.verifier.VerifyHolder(hc, node, c.vol); err != nil {
		return fmt.Errorf("fs: %s may not host %s: %w: %w", path, c.vol, err, fsys.ErrPermission)
	}
	c.mu.Lock()
	if c.peer == id {
		c.host = path
	}
	c.mu.Unlock()
	return nil
}

// Get returns records as of at (0: current).
func (c *Client) Get(ctx context.Context, at uint64, keys ...fsys.RecordKey) ([]fsys.Record, error) {
	var out []fsys.Record
	for len(keys) > 0 {
		n := min(len(keys), MaxKeys)
		recs, err := c.records(ctx, &request{Op: opGet, At: at, Keys: keys[:n]})
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
		keys = keys[n:]
	}
	return out, nil
}

// List returns a directory's entry records as of at (0: current).
func (c *Client) List(ctx context.Context, at uint64, dir fsys.Ino) ([]fsys.Record, error) {
	return c.records(ctx, &request{Op: opList, At: at, Dir: dir})
}

func (c *Client) records(ctx context.Context, q *request) ([]fsys.Record, error) {
	var out []fsys.Record
	_, err := c.call(ctx, q, nil, func(r *wireResponse) (bool, error) {
		recs, err := decodeRecords(r.Recs)
		if err != nil {
			return false, err
		}
		out = append(out, recs...)
		if len(out) > MaxTxRecords*4 {
			return false, fmt.Errorf("more than %d records: %w", MaxTxRecords*4, errProtocol)
		}
		return r.More, nil
	})
	return out, err
}

// Commit sends tx (its header, then its records in frames) and returns
// the new volume version once the host has applied it durably and holds
// every block it names (fetched from this node first).
func (c *Client) Commit(ctx context.Context, tx *fsys.Tx) (uint64, error) {
	if tx == nil {
		return 0, fmt.Errorf("fs: commit: no transaction: %w", fsys.ErrInvalid)
	}
	frames, err := recordFrames(tx.Put)
	if err != nil {
		return 0, fmt.Errorf("fs: commit to %s: %w", c.vol, err)
	}
	return c.commit(ctx, tx, frames, false)
}

func (c *Client) commit(ctx context.Context, tx *fsys.Tx, frames [][]byte, noSync bool) (uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCommitTimeout)
		defer cancel()
	}
	var ver uint64
	_, err := c.call(ctx, &request{Op: opCommit, Tx: tx, NoSync: noSync}, frames, func(r *wireResponse) (bool, error) {
		ver = r.Ver
		return false, nil
	})
	return ver, err
}

// CommitNoSync is Commit that the host acknowledges once the Tx is
// applied and visible, before it is durable (fsys.Syncer); Sync makes it
// durable. A host that predates it refuses the request; the client then
// commits durably (Commit), now and from then on. Safe for concurrent
// use.
func (c *Client) CommitNoSync(ctx context.Context, tx *fsys.Tx) (uint64, error) {
	if c.syncAll.Load() {
		return c.Commit(ctx, tx)
	}
	if tx == nil {
		return 0, fmt.Errorf("fs: commit: no transaction: %w", fsys.ErrInvalid)
	}
	frames, err := recordFrames(tx.Put)
	if err != nil {
		return 0, fmt.Errorf("fs: commit to %s: %w", c.vol, err)
	}
	ver, err := c.commit(ctx, tx, frames, true)
	if refusedAsProtocol(err) {
		c.syncAll.Store(true)
		return c.commit(ctx, tx, frames, false)
	}
	return ver, err
}

// Sync returns when the host holds every version up to version durably
// (fsys.Syncer). Against a host that predates it (whose commits are all
// durable) it returns nil. Errors: fsys.ErrUnavailable, fsys.ErrIntegrity
// (the host lost unsynced versions in a crash of its machine). Safe for
// concurrent use.
func (c *Client) Sync(ctx context.Context, version uint64) error {
	if version == 0 || c.syncAll.Load() {
		return nil
	}
	_, err := c.call(ctx, &request{Op: opSync, At: version}, nil, func(*wireResponse) (bool, error) {
		return false, nil
	})
	if refusedAsProtocol(err) {
		c.syncAll.Store(true)
		return nil
	}
	return err
}

// recordFrames encodes records as frames of at most batchCount records
// and about batchBytes.
func recordFrames(recs []fsys.Record) ([][]byte, error) {
	if len(recs) > MaxTxRecords {
		return nil, fmt.Errorf("a transaction of %d records is over the limit of %d: %w", len(recs), MaxTxRecords, fsys.ErrInvalid)
	}
	var (
		frames [][]byte
		total  int
	)
	err := batch(recs, func(ws []wireRecord) error {
		b, err := encodeRecordsFrame(ws)
		if err != nil {
			return err
		}
		total += len(b)
		if total > MaxTxBytes {
			return fmt.Errorf("a transaction of over %d bytes: %w", MaxTxBytes, fsys.ErrInvalid)
		}
		frames = append(frames, b)
		return nil
	})
	return frames, err
}

// batch encodes records and hands them to fn in batches that fit a frame.
func batch(recs []fsys.Record, fn func([]wireRecord) error) error {
	var (
		cur  []wireRecord
		size int
	)
	for i := range recs {
		w, err := encRecord(&recs[i])
		if err != nil {
			return err
		}
		n := len(w.Sealed) + len(w.Blocks) + len(w.Grant) + 96
		if len(cur) > 0 && (size+n > batchBytes || len(cur) == batchCount) {
			if err := fn(cur); err != nil {
				return err
			}
			cur, size = nil, 0
		}
		cur = append(cur, w)
		size += n
	}
	if len(cur) > 0 {
		return fn(cur)
	}
	return nil
}

// Readcaps returns the readcaps held for reader in the volume.
func (c *Client) Readcaps(ctx context.Context, reader paths.ID) ([]fsys.Readcap, error) {
	var out []fsys.Readcap
	_, err := c.call(ctx, &request{Op: opReadcaps, Reader: reader}, nil, func(r *wireResponse) (bool, error) {
		rcs, err := decReadcaps(r.Caps)
		if err != nil {
			return false, err
		}
		out = append(out, rcs...)
		if len(out) > MaxReadcaps {
			return false, fmt.Errorf("more than %d readcaps: %w", MaxReadcaps, errProtocol)
		}
		return r.More, nil
	})
	return out, err
}

// Log lists the committed Txs that touched key, newest first (at most
// MaxLog; limit 0 asks for that many).
func (c *Client) Log(ctx context.Context, key fsys.RecordKey, limit int) ([]fsys.LogEntry, error) {
	if limit <= 0 || limit > MaxLog {
		limit = MaxLog
	}
	var out []fsys.LogEntry
	_, err := c.call(ctx, &request{Op: opLog, Keys: []fsys.RecordKey{key}, Limit: limit}, nil, func(r *wireResponse) (bool, error) {
		es, err := decodeLog(r.Log)
		out = es
		return false, err
	})
	return out, err
}

// Watch delivers every Change after version after, in order, until ctx
// ends or the host goes away; then the channel is closed.
func (c *Client) Watch(ctx context.Context, after uint64) (<-chan fsys.Change, error) {
	s, br, err := c.open(ctx, &request{Op: opWatch, After: after}, nil)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	r, err := readResponse(br)
	if err == nil && r.Kind != kindOK {
		err = kindErr(r.Kind, r.Msg)
	}
	if err != nil {
		stop()
		s.Reset()
		return nil, c.fail("watch", ctx, err)
	}
	_ = s.SetReadDeadline(time.Time{})
	ch := make(chan fsys.Change, watchBuffer)
	go func() {
		defer close(ch)
		defer stop()
		defer s.Reset()
		var cur fsys.Change
		for {
			r, err := readResponse(br)
			if err != nil || r.Kind != kindOK || r.Change == nil {
				return
			}
			keys, err := decKeys(r.Change.Keys, "change keys")
			if err != nil || (len(cur.Keys) > 0 && cur.Version != r.Change.Version) {
				return
			}
			cur.Version = r.Change.Version
			cur.Keys = append(cur.Keys, keys...)
			if r.More {
				if len(cur.Keys) > MaxTxRecords*2 {
					return
				}
				continue
			}
			select {
			case ch <- cur:
			case <-ctx.Done():
				return
			}
			cur = fsys.Change{}
		}
	}()
	return ch, nil
}

// call runs one request: it opens a stream, sends q and the extra frames,
// and passes each response frame to each until each says no more follow.
// It returns the peer that answered.
func (c *Client) call(ctx context.Context, q *request, extra [][]byte, each func(*wireResponse) (bool, error)) (peer.ID, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCallTimeout)
		defer cancel()
	}
	s, br, err := c.open(ctx, q, extra)
	if err != nil {
		return "", err
	}
	id := s.Conn().RemotePeer()
	defer context.AfterFunc(ctx, func() { s.Reset() })()
	for {
		r, err := readResponse(br)
		if err != nil {
			s.Reset()
			return id, c.fail(opName(q.Op), ctx, err)
		}
		if r.Kind != kindOK {
			s.Close()
			return id, fmt.Errorf("fs: %s %s: %w", opName(q.Op), c.vol, kindErr(r.Kind, r.Msg))
		}
		more, err := each(r)
		if err != nil {
			s.Reset()
			return id, c.fail(opName(q.Op), ctx, err)
		}
		if !more {
			s.Close()
			return id, nil
		}
	}
}

// open opens a stream to the host and sends the request and extra frames.
// When the stream cannot be opened and a relocate function is set, it
// finds the volume's host again and retries once.
func (c *Client) open(ctx context.Context, q *request, extra [][]byte) (network.Stream, *bufio.Reader, error) {
	q.Vol = c.vol
	body, err := encodeRequest(q)
	if err != nil {
		return nil, nil, fmt.Errorf("fs: %s %s: %w", opName(q.Op), c.vol, err)
	}
	if len(body) > MaxFrame {
		return nil, nil, fmt.Errorf("fs: %s %s: request of %d bytes is over %d: %w", opName(q.Op), c.vol, len(body), MaxFrame, fsys.ErrInvalid)
	}
	c.mu.Lock()
	id := c.peer
	c.mu.Unlock()
	s, err := c.node.Host().NewStream(network.WithAllowLimitedConn(ctx, "blocktree fs"), id, Protocol)
	if err != nil && c.relocate != nil && ctx.Err() == nil {
		if nid, rerr := c.relocate(ctx); rerr == nil {
			c.mu.Lock()
			c.peer, c.host, id = nid, paths.Path{}, nid
			c.mu.Unlock()
			s, err = c.node.Host().NewStream(network.WithAllowLimitedConn(ctx, "blocktree fs"), id, Protocol)
		}
	}
	if err != nil {
		return nil, nil, c.fail(opName(q.Op), ctx, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := writeFrame(s, body); err != nil {
		s.Reset()
		return nil, nil, c.fail(opName(q.Op), ctx, err)
	}
	for _, f := range extra {
		if err := writeFrame(s, f); err != nil {
			s.Reset()
			return nil, nil, c.fail(opName(q.Op), ctx, err)
		}
	}
	if q.Op != opWatch {
		_ = s.CloseWrite()
	}
	return s, bufio.NewReaderSize(s, 16<<10), nil
}

// fail wraps a transport or protocol error: fsys.ErrUnavailable (and
// ctx's error when it ended), or fsys.ErrInvalid for a protocol violation.
func (c *Client) fail(op string, ctx context.Context, err error) error {
	c.mu.Lock()
	id := c.peer
	c.mu.Unlock()
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("fs: %s %s at peer %s: %w: %w", op, c.vol, id, fsys.ErrUnavailable, ctx.Err())
	case errors.Is(err, errProtocol):
		return fmt.Errorf("fs: %s %s at peer %s: %v: %w", op, c.vol, id, err, fsys.ErrUnavailable)
	case errors.Is(err, fsys.ErrPermission), errors.Is(err, fsys.ErrInvalid), errors.Is(err, fsys.ErrNoSpace):
		return fmt.Errorf("fs: %s %s: %w", op, c.vol, err)
	}
	return fmt.Errorf("fs: %s %s: host peer %s unreachable (%v): %w", op, c.vol, id, err, fsys.ErrUnavailable)
}

func readResponse(br *bufio.Reader) (*wireResponse, error) {
	b, err := readFrame(br, MaxFrame)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return decodeResponse(b)
}

func encodeRecordsFrame(ws []wireRecord) ([]byte, error) {
	return encodeCanon(&wireRecords{V: WireVersion, Recs: ws})
}

func opName(op uint8) string {
	switch op {
	case opInfo:
		return "info"
	case opGet:
		return "get"
	case opList:
		return "list"
	case opCommit:
		return "commit"
	case opReadcaps:
		return "readcaps"
	case opLog:
		return "log"
	case opWatch:
		return "watch"
	case opSync:
		return "sync"
	}
	return fmt.Sprintf("op %d", op)
}

var (
	_ fsys.Host   = (*Client)(nil)
	_ fsys.Syncer = (*Client)(nil)
)
