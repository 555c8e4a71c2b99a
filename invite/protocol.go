package invite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

// ProtocolID is the join protocol. The inviter serves it to any peer,
// authenticated or not: the secret is the credential.
const ProtocolID protocol.ID = "/blocktree/join/1.0.0"

// maxMessage bounds a join request or response.
const maxMessage = 64 << 10

// streamTimeout bounds one join exchange on the inviter's side.
const streamTimeout = 30 * time.Second

type request struct {
	V      uint   `cbor:"v"`
	Secret []byte `cbor:"secret"`
	Node   []byte `cbor:"node"` // the joiner's node public key, libp2p encoding
}

type response struct {
	V         uint     `cbor:"v"`
	Error     string   `cbor:"error,omitempty"` // an error kind, below
	Message   string   `cbor:"msg,omitempty"`
	Writecap  []byte   `cbor:"writecap,omitempty"`
	Bootstrap [][]byte `cbor:"bootstrap,omitempty"`
}

// Error kinds on the wire.
const (
	kindUnknown = "unknown"
	kindExpired = "expired"
	kindUsed    = "used"
	kindName    = "name-in-use"
	kindBad     = "bad-request"
	kindFailed  = "failed"
)

var kindErrors = map[string]error{kindUnknown: ErrUnknown, kindExpired: ErrExpired, kindUsed: ErrUsed, kindName: ErrNameInUse}

// Server answers join requests on a host: a service (Serve, Close).
type Server struct {
	h         host.Host
	reg       *Registry
	bootstrap func() []ma.Multiaddr
	log       *slog.Logger
	ctx       context.Context // ends when the server stops; exchanges under way end with it
	stop      context.CancelFunc
	streams   sync.WaitGroup // exchanges under way
	once      sync.Once
	done      chan struct{} // closed when Serve has returned (or Close ran without Serve)

	// mu guards served, and orders adding an exchange to streams
	// against stopping.
	mu     sync.Mutex
	served bool
}

// NewServer returns a server that answers join requests on h with reg
// once it serves; bootstrap returns the addresses a new node should
// bootstrap from. log may be nil.
func NewServer(h host.Host, reg *Registry, bootstrap func() []ma.Multiaddr, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{h: h, reg: reg, bootstrap: bootstrap, log: log, done: make(chan struct{})}
	s.ctx, s.stop = context.WithCancel(context.Background())
	return s
}

// Serve handles join requests until ctx ends or Close is called, then
// stops taking streams, ends the exchanges under way and waits for them.
// It returns nil on a stop (at once when the server was closed before),
// and an error when called twice.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	stopped, again := s.ctx.Err() != nil, s.served
	s.served = true
	s.mu.Unlock()
	switch {
	case stopped:
		return nil // closed before it served
	case again:
		return errors.New("invite: Serve called twice")
	}
	defer close(s.done)
	s.h.SetStreamHandler(ProtocolID, s.handleStream)
	select {
	case <-ctx.Done():
	case <-s.ctx.Done():
	}
	s.h.RemoveStreamHandler(ProtocolID)
	s.mu.Lock()
	s.stop() // under mu: no exchange is added once Wait may run
	s.mu.Unlock()
	s.streams.Wait()
	return nil
}

// Close stops the server and waits until Serve has returned.
// Idempotent; safe for concurrent use.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.stop() // a later Serve returns at once
		served := s.served
		s.mu.Unlock()
		if !served {
			close(s.done)
		}
	})
	<-s.done
	return nil
}

func (s *Server) handleStream(st network.Stream) {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		st.Reset()
		return
	}
	s.streams.Add(1)
	s.mu.Unlock()
	defer s.streams.Done()
	defer st.Close()
	ctx, cancel := context.WithTimeout(s.ctx, streamTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { st.Reset() }) // unblock reads when stopping
	defer stop()
	_ = st.SetDeadline(time.Now().Add(streamTimeout))
	resp := handle(ctx, s.reg, st, s.bootstrap)
	if resp.Error != "" {
		s.log.Info("join refused", "peer", st.Conn().RemotePeer(), "reason", resp.Message)
	} else {
		s.log.Info("machine joined", "peer", st.Conn().RemotePeer())
	}
	b, err := canon.Marshal(&resp)
	if err != nil {
		st.Reset()
		return
	}
	if _, err := st.Write(b); err != nil {
		st.Reset()
	}
}

func handle(ctx context.Context, reg *Registry, s network.Stream, bootstrap func() []ma.Multiaddr) response {
	fail := func(kind string, err error) response { return response{V: 1, Error: kind, Message: err.Error()} }
	data, err := io.ReadAll(io.LimitReader(s, maxMessage+1))
	if err != nil || len(data) > maxMessage {
		return fail(kindBad, fmt.Errorf("reading the request: %v", err))
	}
	secret, node, err := decodeRequest(data)
	if err != nil {
		return fail(kindBad, err)
	}
	w, _, err := reg.Redeem(ctx, secret, node)
	if err != nil {
		for kind, sentinel := range kindErrors {
			if errors.Is(err, sentinel) {
				return fail(kind, err)
			}
		}
		return fail(kindFailed, err)
	}
	resp := response{V: 1, Writecap: w.Marshal()}
	for _, a := range bootstrap() {
		resp.Bootstrap = append(resp.Bootstrap, a.Bytes())
	}
	return resp
}

// decodeRequest decodes a join request from the network.
func decodeRequest(data []byte) ([]byte, crypto.PubKey, error) {
	var req request
	if err := canon.Unmarshal(data, &req); err != nil || req.V != 1 {
		return nil, nil, fmt.Errorf("malformed join request")
	}
	if len(req.Secret) != SecretSize {
		return nil, nil, fmt.Errorf("join request: secret of %d bytes", len(req.Secret))
	}
	node, err := crypto.UnmarshalPublicKey(req.Node)
	if err != nil {
		return nil, nil, fmt.Errorf("join request: node key: %v", err)
	}
	switch node.Type() {
	case crypto.Ed25519, crypto.ECDSA:
	default:
		return nil, nil, fmt.Errorf("join request: node key type %v is not a principal key type", node.Type())
	}
	return req.Secret, node, nil
}

// decodeResponse decodes the inviter's answer.
func decodeResponse(data []byte) (response, error) {
	var resp response
	if err := canon.Unmarshal(data, &resp); err != nil || resp.V != 1 {
		return response{}, fmt.Errorf("join: the inviter sent a malformed answer")
	}
	return resp, nil
}

// Result is what a joiner receives.
type Result struct {
	Writecap  *caps.Writecap
	Path      paths.Path
	Bootstrap []ma.Multiaddr
}

// Join redeems tok with the inviter from h (any libp2p host; it need not be
// authenticated) for the node key node. It checks that the writecap it gets
// is held by node, covers /<root>/<name> of the token and verifies now.
// Errors wrap ErrNoInviter, ErrUnknown, ErrExpired, ErrUsed or
// ErrNameInUse.
func Join(ctx context.Context, h host.Host, tok Token, node crypto.PubKey) (Result, error) {
	infos, err := peer.AddrInfosFromP2pAddrs(tok.Addrs...)
	if err != nil || len(infos) == 0 {
		return Result{}, fmt.Errorf("%w: token addresses: %v", ErrBadToken, err)
	}
	var s network.Stream
	var errs []error
	for _, ai := range infos {
		if err := h.Connect(ctx, ai); err != nil {
			errs = append(errs, err)
			continue
		}
		if s, err = h.NewStream(ctx, ai.ID, ProtocolID); err != nil {
			errs = append(errs, err)
			continue
		}
		break
	}
	if s == nil {
		return Result{}, fmt.Errorf("%w at %v (is its daemon running, and reachable from here?): %w", ErrNoInviter, tok.Addrs, errors.Join(errs...))
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	nb, err := crypto.MarshalPublicKey(node)
	if err != nil {
		return Result{}, err
	}
	b, err := canon.Marshal(&request{V: 1, Secret: tok.Secret, Node: nb})
	if err != nil {
		return Result{}, err
	}
	if _, err := s.Write(b); err != nil {
		return Result{}, fmt.Errorf("%w: sending the request: %v", ErrNoInviter, err)
	}
	if err := s.CloseWrite(); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrNoInviter, err)
	}
	data, err := io.ReadAll(io.LimitReader(s, maxMessage+1))
	if err != nil || len(data) > maxMessage {
		return Result{}, fmt.Errorf("%w: reading the answer: %v", ErrNoInviter, err)
	}
	resp, err := decodeResponse(data)
	if err != nil {
		return Result{}, err
	}
	if resp.Error != "" {
		if sentinel, ok := kindErrors[resp.Error]; ok {
			return Result{}, fmt.Errorf("join: %w", sentinel)
		}
		return Result{}, fmt.Errorf("join: the inviter refused: %s", resp.Message)
	}
	w, err := caps.Decode(resp.Writecap)
	if err != nil {
		return Result{}, fmt.Errorf("join: writecap from the inviter: %w", err)
	}
	want, err := paths.New(tok.Root, tok.Name)
	if err != nil {
		return Result{}, err
	}
	nid, err := caps.PrincipalID(node)
	if err != nil {
		return Result{}, err
	}
	if err := caps.NewVerifier().VerifyHolder(w, nid, want); err != nil {
		return Result{}, fmt.Errorf("join: the inviter's writecap does not grant this node %s: %w", want, err)
	}
	r := Result{Writecap: w, Path: want}
	for _, ab := range resp.Bootstrap {
		if a, err := ma.NewMultiaddrBytes(ab); err == nil {
			r.Bootstrap = append(r.Bootstrap, a)
		}
	}
	return r, nil
}
