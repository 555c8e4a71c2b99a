package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/paths"
)

// DefaultConnectTimeout bounds Connect and Ping when ctx has no deadline.
const DefaultConnectTimeout = 30 * time.Second

// Ping payload sizes.
const (
	PingSize    = 32 // what Ping sends
	maxPingSize = 32
)

// Connect resolves p, connects to the peer that hosts it, and waits until
// that peer has proven on the connection that it holds p. It returns the
// peer's ID. A cached resolution whose peer cannot be reached is dropped and
// p resolved afresh once.
//
// Errors: those of Resolve; ErrUnreachable when no connection could be
// made; ErrNotAuthenticated (with the caps error) when the peer's proof
// was refused, never came, or proved another path. p may be this node's
// own path: then Connect returns this node's ID. Safe for concurrent use.
func (n *Node) Connect(ctx context.Context, p paths.Path) (peer.ID, error) {
	if p == n.id.Path {
		return n.h.ID(), nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultConnectTimeout)
		defer cancel()
	}
	res, err := n.Resolve(ctx, p)
	if err != nil {
		return "", err // "p2p: resolve <path>: …"
	}
	// A relayed connection will do (hole punching upgrades it when it
	// can): proofs and pings are small.
	ctx = network.WithAllowLimitedConn(ctx, "blocktree connect")
	err = n.h.Connect(ctx, peer.AddrInfo{ID: res.Peer, Addrs: res.Addrs})
	if err != nil && res.FromCache {
		n.Invalidate(p)
		if fresh, ferr := n.Resolve(ctx, p); ferr == nil && fresh.Seq != res.Seq {
			res = fresh
			err = n.h.Connect(ctx, peer.AddrInfo{ID: res.Peer, Addrs: res.Addrs})
		}
	}
	if err != nil {
		return "", fmt.Errorf("p2p: connect %s: peer %s at %v: %w: %v", p, res.Peer, res.Addrs, ErrUnreachable, err)
	}
	got, err := n.waitVerified(ctx, res.Peer)
	if err != nil {
		return "", fmt.Errorf("p2p: connect %s: %w", p, err)
	}
	if got != p {
		n.Invalidate(p)
		return "", fmt.Errorf("p2p: connect %s: peer %s proved %s instead (stale record?): %w", p, res.Peer, got, ErrNotAuthenticated)
	}
	return res.Peer, nil
}

// Ping connects to p (see Connect) and times one round trip of a
// PingSize-byte echo on an authenticated stream of PingProtocol. The
// duration excludes resolving and connecting. Errors: those of Connect;
// ErrUnreachable when the echo fails (the peer answers only peers whose
// path it has verified). Safe for concurrent use.
func (n *Node) Ping(ctx context.Context, p paths.Path) (time.Duration, error) {
	if p == n.id.Path {
		return 0, fmt.Errorf("p2p: ping %s: that is this node's own path", p)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultConnectTimeout)
		defer cancel()
	}
	id, err := n.Connect(ctx, p)
	if err != nil {
		return 0, err
	}
	payload := make([]byte, PingSize)
	_, _ = rand.Read(payload)
	start := time.Now()
	if err := n.ping(ctx, id, payload); err != nil {
		return 0, fmt.Errorf("p2p: ping %s: %w", p, err)
	}
	return time.Since(start), nil
}

// ping sends payload (1 to 32 bytes) to a connected peer on PingProtocol
// and checks the echo.
func (n *Node) ping(ctx context.Context, id peer.ID, payload []byte) error {
	if len(payload) == 0 || len(payload) > maxPingSize {
		return fmt.Errorf("ping payload of %d bytes, want 1 to %d", len(payload), maxPingSize)
	}
	ctx = network.WithAllowLimitedConn(network.WithNoDial(ctx, "ping after connect"), "blocktree ping")
	s, err := n.h.NewStream(ctx, id, PingProtocol)
	if err != nil {
		return fmt.Errorf("peer %s: open stream: %w: %v", id, ErrUnreachable, err)
	}
	defer context.AfterFunc(ctx, func() { s.Reset() })()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	msg := make([]byte, 0, 1+len(payload))
	msg = append(append(msg, byte(len(payload))), payload...)
	if _, err := s.Write(msg); err != nil {
		s.Reset()
		return fmt.Errorf("peer %s: %w: %v", id, ErrUnreachable, err)
	}
	echo := make([]byte, len(payload))
	if _, err := io.ReadFull(s, echo); err != nil {
		s.Reset()
		return fmt.Errorf("peer %s: no echo (does it know our path yet?): %w: %v", id, ErrUnreachable, err)
	}
	_ = s.Close()
	if !bytes.Equal(echo, payload) {
		return fmt.Errorf("peer %s: echo differs from what was sent: %w", id, ErrUnreachable)
	}
	return nil
}

// pingTimeout bounds one echo on the serving side.
const pingTimeout = 10 * time.Second

// handlePing echoes one payload, for peers whose path is verified only; it
// waits (bounded) for the peer's proof, which may still be in flight.
func (n *Node) handlePing(s network.Stream) {
	ctx, cancel := context.WithTimeout(n.ctx, authTimeout)
	defer cancel()
	if _, err := n.waitVerified(ctx, s.Conn().RemotePeer()); err != nil {
		n.log.Debug("ping refused", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	_ = s.SetDeadline(time.Now().Add(pingTimeout))
	var buf [1 + maxPingSize]byte
	if _, err := io.ReadFull(s, buf[:1]); err != nil {
		s.Reset()
		return
	}
	l := int(buf[0])
	if l == 0 || l > maxPingSize {
		s.Reset()
		return
	}
	if _, err := io.ReadFull(s, buf[1:1+l]); err != nil {
		s.Reset()
		return
	}
	if _, err := s.Write(buf[1 : 1+l]); err != nil {
		s.Reset()
		return
	}
	_ = s.Close()
}
