package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/internal/frame"
	"blocktree.dev/bt/paths"
)

// Protocol IDs.
const (
	// AuthProtocol carries one proof from the side that opens the stream:
	// a uvarint length, the proof (docs/p2p.md), and back one verdict byte.
	AuthProtocol protocol.ID = "/blocktree/auth/1.0.0"
	// PingProtocol echoes a 1–32 byte payload for verified peers only.
	PingProtocol protocol.ID = "/blocktree/ping/1.0.0"
	// DHTPrefix is the protocol prefix of Blocktree's private Kademlia DHT:
	// its protocol is /blocktree/kad/1.0.0.
	DHTPrefix protocol.ID = "/blocktree"
)

// ProofVersion is the auth-proof format version this build writes and the
// only one it reads.
const ProofVersion = 1

// MaxProofSize bounds an encoded proof.
const MaxProofSize = 2*caps.MaxEncodedSize + paths.MaxPathLen + 256

// Verdict bytes the receiver of a proof answers with.
const (
	verdictAccepted byte = 0
	verdictRefused  byte = 1
)

// proof is what a node presents on every new connection: its path, the
// host certificate binding the connection's key to its node key, and the
// writecap binding the node key to the path. It is not signed: the secure
// channel (Noise or TLS) already proves possession of the host key, and the
// receiver checks that the certificate is for exactly that key, so a proof
// replayed by another peer fails.
type proof struct {
	Path     paths.Path
	HostCert *caps.HostCert
	Writecap *caps.Writecap
}

type wireProof struct {
	V        uint   `cbor:"v"`
	Path     string `cbor:"path"`
	HostCert []byte `cbor:"hostcert"`
	Writecap []byte `cbor:"writecap"`
}

func encodeProof(id *Identity) ([]byte, error) {
	b, err := canon.Marshal(&wireProof{V: ProofVersion, Path: id.Path.String(), HostCert: id.Cert.Marshal(), Writecap: id.Writecap.Marshal()})
	if err != nil {
		return nil, fmt.Errorf("p2p: encode proof: %w", err)
	}
	return b, nil
}

// decodeProof parses an encoded proof, checking its encoding but no
// signature or time. Errors wrap caps.ErrMalformed or caps.ErrUnknownVersion.
func decodeProof(data []byte) (*proof, error) {
	if len(data) > MaxProofSize {
		return nil, fmt.Errorf("proof of %d bytes exceeds %d: %w", len(data), MaxProofSize, caps.ErrMalformed)
	}
	var w wireProof
	if err := canon.Unmarshal(data, &w); err != nil {
		if v, verr := canon.Version(data); verr == nil && v != ProofVersion {
			return nil, fmt.Errorf("proof version %d: %w", v, caps.ErrUnknownVersion)
		}
		return nil, fmt.Errorf("proof: %w: %v", caps.ErrMalformed, err)
	}
	if w.V != ProofVersion {
		return nil, fmt.Errorf("proof version %d: %w", w.V, caps.ErrUnknownVersion)
	}
	p, err := paths.Parse(w.Path)
	if err != nil {
		return nil, fmt.Errorf("proof: path: %w: %v", caps.ErrMalformed, err)
	}
	hc, err := caps.DecodeHostCert(w.HostCert)
	if err != nil {
		return nil, fmt.Errorf("proof: %w", err)
	}
	wc, err := caps.Decode(w.Writecap)
	if err != nil {
		return nil, fmt.Errorf("proof: %w", err)
	}
	return &proof{Path: p, HostCert: hc, Writecap: wc}, nil
}

// isNodePath reports whether p has the shape of a node's path,
// /<root>/<name>.
func isNodePath(p paths.Path) bool { return p.Depth() == 1 }

// verifyProof checks a proof received on a connection whose authenticated
// remote key is remote. It returns the proven path and when the proof stops
// being valid (the earlier of the certificate's and the writecap's
// expiry), or an error wrapping exactly one caps sentinel.
func verifyProof(certs *certCache, v *caps.Verifier, remote crypto.PubKey, data []byte, now time.Time) (paths.Path, time.Time, error) {
	pr, err := decodeProof(data)
	if err != nil {
		return paths.Path{}, time.Time{}, err
	}
	if err := certs.verify(pr.HostCert, now); err != nil {
		return paths.Path{}, time.Time{}, fmt.Errorf("proof for %s: %w", pr.Path, err)
	}
	if remote == nil || !pr.HostCert.Host.Equals(remote) {
		rid := peer.ID("")
		if remote != nil {
			rid, _ = peer.IDFromPublicKey(remote)
		}
		return paths.Path{}, time.Time{}, fmt.Errorf("proof for %s: host certificate is for %s but the connection is from %s: %w",
			pr.Path, pr.HostCert.HostID, rid, caps.ErrWrongHolder)
	}
	if !isNodePath(pr.Path) {
		return paths.Path{}, time.Time{}, fmt.Errorf("proof claims %s, which is not a node path /<root>/<name>: %w", pr.Path, caps.ErrPathNotCovered)
	}
	if err := v.VerifyHolder(pr.Writecap, pr.HostCert.NodeID, pr.Path); err != nil {
		return paths.Path{}, time.Time{}, fmt.Errorf("proof for %s: %w", pr.Path, err)
	}
	exp := pr.HostCert.Expiry
	if e := pr.Writecap.Expiry(); e.Before(exp) {
		exp = e
	}
	return pr.Path, exp, nil
}

// authTable holds the outcome of the proof received on each live
// connection. A peer's verified path is that of any of its connections
// whose proof verified and has not expired. Safe for concurrent use.
type authTable struct {
	mu sync.Mutex
	// peers holds the live connections of each peer and their outcomes;
	// changed is closed (and replaced) on every change, waking waiters.
	peers   map[peer.ID]map[network.Conn]*connAuth
	changed chan struct{}
}

// connAuth is the outcome of one connection's proof: pending until done.
type connAuth struct {
	done   bool
	path   paths.Path
	node   paths.ID // the node principal of the proof's host certificate
	expiry time.Time
	err    error
}

func newAuthTable() *authTable {
	return &authTable{peers: make(map[peer.ID]map[network.Conn]*connAuth), changed: make(chan struct{})}
}

// notifyLocked wakes every waiter. Called with mu held.
func (t *authTable) notifyLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *authTable) addConn(c network.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := c.RemotePeer()
	if t.peers[p] == nil {
		t.peers[p] = make(map[network.Conn]*connAuth)
	}
	if _, ok := t.peers[p][c]; !ok {
		t.peers[p][c] = &connAuth{}
	}
	t.notifyLocked()
}

func (t *authTable) removeConn(c network.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := c.RemotePeer()
	if cs := t.peers[p]; cs != nil {
		delete(cs, c)
		if len(cs) == 0 {
			delete(t.peers, p)
		}
	}
	t.notifyLocked()
}

// set records the outcome of c's proof. An outcome for a connection that
// has already closed is dropped.
func (t *authTable) set(c network.Conn, path paths.Path, node paths.ID, expiry time.Time, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.IsClosed() {
		return
	}
	p := c.RemotePeer()
	if t.peers[p] == nil {
		t.peers[p] = make(map[network.Conn]*connAuth)
	}
	t.peers[p][c] = &connAuth{done: true, path: path, node: node, expiry: expiry, err: err}
	t.notifyLocked()
}

// lookup returns p's verified path, or the reason it has none: failure is
// the last refused proof, pending whether a proof is still awaited.
//
//lint:ignore ST1008 failure is a looked-up value (a recorded refusal), not lookup's own error.
func (t *authTable) lookup(p peer.ID, now time.Time) (path paths.Path, ok bool, failure error, pending bool, changed <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.peers[p] {
		switch {
		case !st.done:
			pending = true
		case st.err != nil:
			failure = st.err
		case now.Before(st.expiry):
			return st.path, true, nil, false, t.changed
		default:
			failure = fmt.Errorf("proof for %s expired at %s: %w", st.path, st.expiry.UTC().Format(time.RFC3339), caps.ErrExpired)
		}
	}
	return paths.Path{}, false, failure, pending, t.changed
}

// reason says why p has no verified path, for Peers.
func (t *authTable) reason(p peer.ID, now time.Time) string {
	_, ok, failure, pending, _ := t.lookup(p, now)
	switch {
	case ok:
		return ""
	case failure != nil:
		return failure.Error()
	case pending:
		return "proof pending"
	}
	return "no proof received"
}

// VerifiedPath returns the path that peer id has proven on a live
// connection, and whether it has. It never returns a path a peer merely
// claims. Safe for concurrent use; does not block.
func (n *Node) VerifiedPath(id peer.ID) (paths.Path, bool) {
	p, ok, _, _, _ := n.auth.lookup(id, n.now())
	return p, ok
}

// waitVerified waits until peer p has proven its path on a live connection
// and returns that path. It fails with ErrNotAuthenticated, wrapping the
// caps error, as soon as every connection's proof was refused; with
// ErrNotAuthenticated and ctx's error when no proof came before ctx ended;
// and with ErrUnreachable when p is not connected.
func (n *Node) waitVerified(ctx context.Context, p peer.ID) (paths.Path, error) {
	for {
		path, ok, failure, pending, changed := n.auth.lookup(p, n.now())
		switch {
		case ok:
			return path, nil
		case failure != nil && !pending:
			return paths.Path{}, fmt.Errorf("peer %s: %w: %w", p, ErrNotAuthenticated, failure)
		case failure == nil && !pending && !isConnected(n.h.Network().Connectedness(p)):
			return paths.Path{}, fmt.Errorf("peer %s: not connected: %w", p, ErrUnreachable)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return paths.Path{}, fmt.Errorf("peer %s sent no valid proof of its path in time (is it a Blocktree node?): %w: %w", p, ErrNotAuthenticated, ctx.Err())
		}
	}
}

// isConnected reports whether c is a usable connectedness: a direct or a
// limited (relayed) connection.
func isConnected(c network.Connectedness) bool {
	return c == network.Connected || c == network.Limited
}

// authTimeout bounds one proof exchange, each way.
const authTimeout = 10 * time.Second

// connected handles a new connection: it registers the connection as
// pending and sends our proof on it, off the notifier's goroutine.
func (n *Node) connected(c network.Conn) {
	n.auth.addConn(c)
	n.spawn(func() { n.sendProof(c) })
}

func (n *Node) disconnected(c network.Conn) {
	n.auth.removeConn(c)
	if !isConnected(n.h.Network().Connectedness(c.RemotePeer())) {
		n.h.ConnManager().Unprotect(c.RemotePeer(), "bt-domain")
	}
}

// sendProof opens an auth stream on c, sends our proof and reads the
// verdict.
func (n *Node) sendProof(c network.Conn) {
	ctx, cancel := context.WithTimeout(n.ctx, authTimeout)
	defer cancel()
	ctx = network.WithAllowLimitedConn(ctx, "blocktree auth")
	log := n.log.With("peer", c.RemotePeer())
	s, err := c.NewStream(ctx)
	if err != nil {
		log.Debug("auth: cannot open stream", "err", err)
		return
	}
	defer context.AfterFunc(ctx, func() { s.Reset() })()
	_ = s.SetDeadline(time.Now().Add(authTimeout))
	if err := s.SetProtocol(AuthProtocol); err != nil {
		log.Debug("auth: stream refused by resource manager", "err", err)
		s.Reset()
		return
	}
	rw := msmux.NewMSSelect(s, AuthProtocol)
	frame, err := proofFraming.Append(make([]byte, 0, len(n.proof)+binary.MaxVarintLen64), n.proof)
	if err == nil {
		_, err = rw.Write(frame)
	}
	if err != nil {
		log.Debug("auth: send proof", "err", err)
		s.Reset()
		return
	}
	_ = s.CloseWrite()
	var verdict [1]byte
	if _, err := io.ReadFull(rw, verdict[:]); err != nil {
		log.Debug("auth: no verdict", "err", err)
		s.Reset()
		return
	}
	if verdict[0] != verdictAccepted {
		log.Warn("auth: peer refused our proof (is our writecap or host certificate expired?)", "path", n.id.Path)
	}
	_ = s.Close()
}

// handleAuth receives a peer's proof, verifies it against the connection's
// authenticated key, records the outcome and answers with a verdict.
func (n *Node) handleAuth(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(authTimeout))
	c := s.Conn()
	log := n.log.With("peer", c.RemotePeer())
	if err := s.Scope().ReserveMemory(MaxProofSize, network.ReservationPriorityAlways); err != nil {
		log.Debug("auth: no memory for a proof", "err", err)
		s.Reset()
		return
	}
	defer s.Scope().ReleaseMemory(MaxProofSize)
	data, err := readFrame(bufio.NewReaderSize(s, 512), MaxProofSize)
	if err != nil {
		err = fmt.Errorf("proof: %w: %v", caps.ErrMalformed, err)
		n.auth.set(c, paths.Path{}, "", time.Time{}, err)
		log.Debug("auth: refused", "err", err)
		s.Reset()
		return
	}
	remote := c.RemotePublicKey()
	if remote == nil {
		remote, _ = c.RemotePeer().ExtractPublicKey()
	}
	path, exp, err := verifyProof(n.validator.certs, n.verifier, remote, data, n.now())
	n.auth.set(c, path, proofNode(data, err), exp, err)
	verdict := verdictAccepted
	if err != nil {
		log.Debug("auth: refused", "err", err)
		verdict = verdictRefused
	} else {
		log.Debug("auth: verified", "path", path)
		n.tagPeer(c.RemotePeer(), path)
		n.nudgePublisher()
	}
	_, _ = s.Write([]byte{verdict})
}

// proofFraming is the auth protocol's framing: a uvarint length and
// the proof, 1 to MaxProofSize bytes.
var proofFraming = frame.Format{Prefix: frame.Uvarint, Max: MaxProofSize}

// readFrame reads a uvarint length and that many bytes, 1 to max.
func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	return frame.Format{Prefix: frame.Uvarint, Max: max}.Read(r, nil)
}
