// Package daemon runs a Blocktree node. It only wires components: each
// long-lived part is a service (Serve(ctx) error, and Close where it has
// one) run under one supervisor (internal/supervise), which logs and
// reports the failure of any of them and stops them in reverse order of
// start.
//
// Lifecycle. Run locks the repo, opens the node key just long enough to
// certify a fresh host key (so a TPM is never on a hot path and stays
// free for `bt invite` and other clients), and then starts, in order:
//
//	p2p        the libp2p node (DHT record, mDNS, NAT)
//	invite     the join protocol
//	msg        messaging, pubsub, actors (the Wasm modules' runtime)
//	blocks     the block store, the exchange, replication and scrubbing
//	fs         the file system (fsys/service): client, hosted volumes,
//	           remote volume server, mounts
//	wasm       the Wasm runtime and its deployment controller (wasm/deploy)
//	api        the local API (apiserver, over the components
//	           above) on the unix socket <repo>/api.sock (0600)
//
// It serves until its context ends or a service fails, then stops them
// in reverse: the API first (streaming requests end), then the modules,
// then the file system (unmounting and flushing while peers are still
// reachable), the blocks, messaging, invitations, and p2p last; the
// socket is removed and the lock released. Run returns the failure, if
// any, named by its service.
package daemon

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/api"
	"blocktree.dev/bt/apiserver"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/blocks/leveldb"
	"blocktree.dev/bt/blocks/replica"
	"blocktree.dev/bt/caps"
	fssvc "blocktree.dev/bt/fsys/service"
	"blocktree.dev/bt/internal/supervise"
	"blocktree.dev/bt/invite"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/pubsub"
	"blocktree.dev/bt/repo"
	"blocktree.dev/bt/tpm"
)

// Options configure a daemon beyond its repo.
type Options struct {
	// Listen overrides the repo's listen addresses; empty keeps them (or
	// p2p's defaults).
	Listen []ma.Multiaddr
	// Bootstrap adds to the repo's bootstrap peers.
	Bootstrap []peer.AddrInfo
	MDNS      bool
	NAT       bool
	// Loopback relaxes what a cluster on one machine needs relaxed.
	Loopback bool
	// RecordTTL is the lifetime of the node's path record (p2p default).
	RecordTTL time.Duration
	// MaxMessage bounds one message sent or received (msg default, 64 MiB).
	MaxMessage int64
	// HostCertTTL is the lifetime of the host key's certificate (default
	// 30 days; the daemon makes a new host key at every start).
	HostCertTTL time.Duration
	Log         *slog.Logger
	// Ready is called once the daemon serves, with what it serves.
	Ready func(Ready)
}

// Ready describes a daemon that serves.
type Ready struct {
	Path   string   `json:"path"`
	PeerID string   `json:"peer_id"`
	Addrs  []string `json:"addrs"`
	Socket string   `json:"socket"`
}

// BlocksDir is the block store's directory in the repo.
const BlocksDir = "blocks"

// DefaultHostCertTTL is how long a host key's certificate lasts.
const DefaultHostCertTTL = 30 * 24 * time.Hour

// Run runs the node of repo r until ctx ends or one of its services
// fails (see the package comment).
func Run(ctx context.Context, r *repo.Repo, opts Options) error {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.HostCertTTL <= 0 {
		opts.HostCertTTL = DefaultHostCertTTL
	}
	if opts.MaxMessage <= 0 {
		opts.MaxMessage = msg.DefaultMaxMessage
	}
	unlock, err := repo.Lock(r.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	id, custody, err := identity(ctx, r, opts.HostCertTTL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sup := supervise.New(log.With("subsystem", "daemon"))
	defer sup.Stop()
	if err := start(ctx, sup, r, id, custody, opts, log); err != nil {
		return err
	}
	if err := sup.Wait(ctx); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	return nil
}

// start builds the node's components in order and starts each under sup
// as soon as it is built, so a failure part-way stops what was started.
func start(ctx context.Context, sup *supervise.Supervisor, r *repo.Repo, id *p2p.Identity, custody tpm.Info, opts Options, log *slog.Logger) error {
	fail := func(err error) error { return fmt.Errorf("daemon: %w", err) }
	// Start from the daemon defaults p2p tests (NAT traversal, mDNS, the
	// default listen addresses), then apply the flags and the repo.
	cfg := p2p.DaemonConfig()
	cfg.MDNS, cfg.NAT, cfg.Loopback, cfg.RecordTTL, cfg.Log = opts.MDNS, opts.NAT, opts.Loopback, opts.RecordTTL, log
	switch {
	case len(opts.Listen) > 0:
		cfg.Listen = opts.Listen
	case len(r.Config.ListenAddrs) > 0:
		cfg.Listen = r.Config.ListenAddrs
	}
	cfg.Bootstrap = append(append(cfg.Bootstrap, opts.Bootstrap...), r.Config.BootstrapPeers...)
	node, err := p2p.New(ctx, id, cfg)
	if err != nil {
		return fail(err)
	}
	sup.Start("p2p", node)

	reg := invite.NewRegistry(r.Config.Root, nil)
	sup.Start("invite", invite.NewServer(node.Host(), reg, func() []ma.Multiaddr { return bootstrapAddrs(node) }, log.With("subsystem", "invite")))

	// One verifier for messaging and pub-sub, so a chain checked by one is
	// warm for the other.
	verifier := caps.NewVerifier()
	router, err := msg.New(node, msg.Config{MaxMessage: opts.MaxMessage, Verifier: verifier, Log: log})
	if err != nil {
		return fail(err)
	}
	sup.Start("msg", supervise.Closer(router.Close))
	ps, err := pubsub.New(ctx, node, id, pubsub.Config{Decapsulate: decapsulate(r), Verifier: verifier, Log: log})
	if err != nil {
		return fail(err)
	}
	sup.Start("pubsub", supervise.Closer(ps.Close))
	rt, err := actors.New(r.Config.Node, router, actors.WithPubSub(ps), actors.WithLogger(log))
	if err != nil {
		return fail(err)
	}
	sup.Start("actors", supervise.Closer(rt.Close))

	// Blocks: the durable store, the exchange that serves and fetches
	// them, and the replication service over both.
	st := r.Config.Storage
	storeDir := filepath.Join(r.Dir, BlocksDir)
	store, err := leveldb.Open(storeDir, leveldb.WithQuota(st.Quota))
	if err != nil {
		return fmt.Errorf("daemon: block store: %w", err)
	}
	sup.Start("blocks", supervise.Closer(store.Close))
	xch, err := exchange.New(node, store, exchange.Config{Log: log})
	if err != nil {
		return fail(err)
	}
	sup.Start("exchange", supervise.Closer(xch.Close))
	rep := replica.New(store, xch, func() []replica.Member { return members(node, r) }, replica.Config{
		Policy: replica.Policy{Default: st.Policy.Default, ByPath: st.Policy.ByPath}, ScrubInterval: st.Scrub, Log: log})
	sup.Start("replica", rep)

	// The file system: client, hosted volumes, remote volume server, mounts.
	fsvc, err := fssvc.New(ctx, fssvc.Config{Repo: r, Node: node, Identity: id, Store: store, Exchange: xch, Verifier: verifier,
		Decapsulate: decapsulate(r), Log: log})
	if err != nil {
		return fail(err)
	}
	sup.Start("fs", fsvc)
	wsvc, err := startWasm(ctx, r, id, rt, router, ps, fsvc, verifier, log) // daemon/wasm.go
	if err != nil {
		return err
	}
	sup.Start("wasm", wsvc)

	h := apiserver.New(apiserver.Config{Repo: r, Node: node, Router: router, PubSub: ps, Invites: reg, Actors: rt,
		MaxMessage: opts.MaxMessage, Custody: custody, Started: time.Now(),
		Store: store, StoreDir: storeDir, Replica: rep, GCGrace: st.Grace, FS: fsvc, Verifier: verifier,
		Wasm: wsvc.rt, Deploy: wsvc.ctl, WasmDone: wsvc.ctx.Done(), Log: log.With("subsystem", "api")})
	a, err := newAPI(filepath.Join(r.Dir, api.SocketName), h)
	if err != nil {
		return err
	}
	sup.Start("api", a)
	if opts.Ready != nil {
		rd := Ready{Path: r.Config.Node.String(), PeerID: node.Host().ID().String(), Socket: a.sock}
		for _, ad := range node.Addrs() {
			rd.Addrs = append(rd.Addrs, ad.String())
		}
		opts.Ready(rd)
	}
	log.Info("serving", "path", r.Config.Node.String(), "peer", node.Host().ID())
	return nil
}

// identity opens the node key just long enough to certify a fresh host key.
func identity(ctx context.Context, r *repo.Repo, ttl time.Duration) (*p2p.Identity, tpm.Info, error) {
	w, err := r.Writecap()
	if err != nil {
		return nil, tpm.Info{}, err
	}
	if err := caps.NewVerifier().VerifyHolder(w, r.Config.NodeID, r.Config.Node); err != nil {
		return nil, tpm.Info{}, fmt.Errorf("daemon: this node's writecap: %w (ask the domain's root for a new one)", err)
	}
	k, err := r.NodeKey(ctx)
	if err != nil {
		return nil, tpm.Info{}, err
	}
	defer k.Close()
	id, err := p2p.NewIdentity(ctx, k, w, r.Config.Node, ttl)
	if err != nil {
		return nil, tpm.Info{}, fmt.Errorf("daemon: %w", err)
	}
	return id, k.Info(), nil
}

// decapsulate is the node key's ECDH for confidential topics: the key is
// opened for each call (pub-sub caches what it unwraps), so a TPM is used
// only when a new topic key arrives.
func decapsulate(r *repo.Repo) func(context.Context, *ecdh.PublicKey) ([]byte, error) {
	return func(ctx context.Context, eph *ecdh.PublicKey) ([]byte, error) {
		k, err := r.NodeKey(ctx)
		if err != nil {
			return nil, err
		}
		defer k.Close()
		return k.ECDH(ctx, eph)
	}
}

// members lists the verified, connected nodes of r's domain, r's node
// aside.
func members(n *p2p.Node, r *repo.Repo) []replica.Member {
	c := &r.Config
	var out []replica.Member
	for _, p := range n.Peers() {
		if p.Path.IsZero() || p.Path.Root() != c.Root || p.Path == c.Node {
			continue
		}
		out = append(out, replica.Member{ID: p.ID, Path: p.Path})
	}
	return out
}

// bootstrapAddrs is what a joining machine is told to bootstrap from: this
// node's addresses.
func bootstrapAddrs(n *p2p.Node) []ma.Multiaddr { return n.Addrs() }

// apiService serves the local API on the unix socket.
type apiService struct {
	sock string
	ln   net.Listener
	hs   *http.Server
}

// newAPI listens on sock for h.
func newAPI(sock string, h http.Handler) (*apiService, error) {
	ln, err := listenUnix(sock)
	if err != nil {
		return nil, err
	}
	return &apiService{sock: sock, ln: ln, hs: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Serve answers API requests until ctx ends; then streaming requests
// (listen, subscribe, logs) end, the others get 5 s to finish, and the
// socket is removed.
func (a *apiService) Serve(ctx context.Context) error {
	// Streaming requests end when reqCtx does.
	reqCtx, stop := context.WithCancel(context.Background())
	defer stop()
	a.hs.BaseContext = func(net.Listener) context.Context { return reqCtx }
	done := make(chan error, 1)
	go func() { done <- a.hs.Serve(a.ln) }()
	defer os.Remove(a.sock)
	select {
	case err := <-done:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	stop()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = a.hs.Shutdown(shutCtx)
	<-done
	return nil
}

// listenUnix listens on the API socket with mode 0600, with no moment at
// which another user could connect: the socket is made in a private
// (0700) directory of the repo, set to 0600 there and then moved into
// place. (When that directory's path would be too long for a unix socket,
// the socket is made in place and set to 0600 at once: the repo is 0700.)
// A socket left by a daemon that died is removed: holding the lock proves
// no daemon uses it.
func listenUnix(sock string) (net.Listener, error) {
	if len(sock) >= 104 {
		return nil, fmt.Errorf("daemon: API socket path %s is %d bytes, over the unix socket limit: use a shorter --repo path", sock, len(sock))
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	private := filepath.Join(filepath.Dir(sock), ".sock")
	bind := sock
	if len(filepath.Join(private, filepath.Base(sock))) < 104 {
		if err := os.RemoveAll(private); err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
		if err := os.Mkdir(private, 0o700); err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
		defer os.RemoveAll(private)
		bind = filepath.Join(private, filepath.Base(sock))
	}
	ln, err := net.Listen("unix", bind)
	if err != nil {
		return nil, fmt.Errorf("daemon: API socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // the API service removes the socket
	if err := os.Chmod(bind, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("daemon: %w", err)
	}
	if bind != sock {
		if err := os.Rename(bind, sock); err != nil {
			ln.Close()
			return nil, fmt.Errorf("daemon: API socket: %w", err)
		}
	}
	return ln, nil
}
