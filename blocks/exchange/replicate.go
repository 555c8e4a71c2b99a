package exchange

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/p2p"
)

// Replicate asks peer p to hold cids: p pins them under "replica:"+pin
// (replacing that pin), fetches the blocks it lacks, looking at this node
// first and then at the DHT providers of root, and announces root as a
// provider (in the background, after acknowledging). It returns nil only
// when p acknowledged that every block is durably stored and pinned. p
// must be connected (or dialable from the peerstore) and of this domain.
//
// While p works it sends progress every RequestTimeout/3; Replicate fails
// if p is silent for 2×RequestTimeout, and when ctx ends (p then stops and
// drops a pin it had just made). Errors: blocks.ErrBadPin for a bad pin
// name; ErrDenied, ErrBusy, ErrProtocol; p2p.ErrUnreachable; ErrReplicate
// with p's reason when p could not fetch or pin everything. Safe for
// concurrent use.
func (x *Exchange) Replicate(ctx context.Context, p peer.ID, pin string, root cid.Cid, cids []cid.Cid) error {
	op := fmt.Sprintf("exchange: replicate %q to %s", pin, p)
	if err := checkPin(pin); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if len(cids) > MaxReplicate {
		return fmt.Errorf("%s: %d blocks, over %d per request", op, len(cids), MaxReplicate)
	}
	for _, c := range cids {
		if err := checkCID(c); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	if root.Defined() && len(root.Bytes()) > maxCIDLen {
		return fmt.Errorf("%s: root CID of %d bytes, over %d", op, len(root.Bytes()), maxCIDLen)
	}
	var frames [][]byte
	parts := slices.Collect(slices.Chunk(cids, WireMaxWant))
	if len(parts) == 0 {
		parts = [][]cid.Cid{nil}
	}
	for i, part := range parts {
		f := &replicateFrame{Pin: pin, Root: root, More: i < len(parts)-1, Total: len(cids), CIDs: part}
		frames = append(frames, appendFrame(nil, ftReplicate, appendReplicate(nil, f)))
	}
	err := x.request(ctx, p, frames, func(t frameType, body []byte) (bool, error) {
		if t != ftProgress {
			return false, fmt.Errorf("%w: unexpected %s frame", ErrProtocol, t)
		}
		if _, _, err := decodeProgress(body); err != nil {
			return false, err
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// Unreplicate asks peer p to drop the pin "replica:"+pin (its blocks
// become collectable); dropping an absent pin succeeds. It returns nil
// when p acknowledged. Errors as for Replicate. Safe for concurrent use.
func (x *Exchange) Unreplicate(ctx context.Context, p peer.ID, pin string) error {
	op := fmt.Sprintf("exchange: unreplicate %q at %s", pin, p)
	if err := checkPin(pin); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	frame := appendFrame(nil, ftUnrepl, append([]byte{byte(len(pin))}, pin...))
	err := x.request(ctx, p, [][]byte{frame}, func(t frameType, _ []byte) (bool, error) {
		return false, fmt.Errorf("%w: unexpected %s frame", ErrProtocol, t)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// request opens a stream to p, writes frames and reads frames until an ack
// (nil) or an error frame; other frames go to other, which may end the
// request (true) or fail it.
func (x *Exchange) request(ctx context.Context, p peer.ID, frames [][]byte, other func(frameType, []byte) (bool, error)) error {
	if !x.life.Enter() {
		return ErrClosed
	}
	defer x.life.Leave()
	ctx, cancel := x.opContext(ctx)
	defer cancel()
	timeout := x.cfg.RequestTimeout
	dctx, dcancel := context.WithTimeout(ctx, timeout)
	s, err := x.node.Host().NewStream(network.WithAllowLimitedConn(dctx, "blocktree blocks"), p, Protocol)
	dcancel()
	if err != nil {
		if cerr := context.Cause(ctx); cerr != nil {
			return cerr
		}
		return fmt.Errorf("open stream: %w: %v", p2p.ErrUnreachable, err)
	}
	defer context.AfterFunc(ctx, func() { _ = s.Reset() })()
	bw := bufio.NewWriterSize(s, 64<<10)
	_ = s.SetWriteDeadline(time.Now().Add(timeout))
	for _, f := range frames {
		_, _ = bw.Write(f)
	}
	if err := bw.Flush(); err != nil {
		_ = s.Reset()
		return x.streamErr(ctx, "send request", err)
	}
	br := bufio.NewReaderSize(s, 4<<10)
	for {
		_ = s.SetReadDeadline(time.Now().Add(2 * timeout))
		t, body, err := readFrame(br, nil)
		if err != nil {
			_ = s.Reset()
			return x.streamErr(ctx, "read answer", err)
		}
		switch t {
		case ftAck:
			_ = s.Close()
			return nil
		case ftError:
			_ = s.Close()
			code, text, err := decodeError(body)
			if err != nil {
				return err
			}
			return remoteError(code, text)
		}
		stop, err := other(t, body)
		if err != nil || stop {
			_ = s.Reset()
			return err
		}
	}
}

// streamErr explains an I/O error of a request stream.
func (x *Exchange) streamErr(ctx context.Context, what string, err error) error {
	switch {
	case context.Cause(ctx) != nil:
		return fmt.Errorf("%s: %w", what, context.Cause(ctx))
	case errors.Is(err, ErrProtocol):
		return err
	case isTimeout(err):
		return fmt.Errorf("%s: peer silent for %v: %w: %v", what, 2*x.cfg.RequestTimeout, p2p.ErrUnreachable, err)
	}
	return fmt.Errorf("%s: %w: %v", what, p2p.ErrUnreachable, err)
}
