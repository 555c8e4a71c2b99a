// Package daemon runs a Blocktree node: it locks the repo, proves the
// node's identity with a fresh host key certified by the node key, runs the
// libp2p side (package p2p), serves invitations, and answers the local API
// (package api) on a unix socket in the repo.
//
// Lifecycle: Run blocks until its context ends or a fatal error, then shuts
// down in reverse order: API, invitations, p2p, socket, lock. The node key
// is used once at start (to certify the host key) and closed, so a TPM is
// never on a hot path and stays free for `bt invite` and other clients.
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
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/api"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/blocks/leveldb"
	"blocktree.dev/bt/blocks/replica"
	"blocktree.dev/bt/caps"
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

// Run runs the node of repo r until ctx ends.
func Run(ctx context.Context, r *repo.Repo, opts Options) error {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.HostCertTTL <= 0 {
		opts.HostCertTTL = DefaultHostCertTTL
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
	cfg.Bootstrap = append(cfg.Bootstrap, opts.Bootstrap...)
	cfg.Bootstrap = append(cfg.Bootstrap, r.Config.BootstrapPeers...)
	node, err := p2p.New(ctx, id, cfg)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer node.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- node.Serve(ctx) }()

	reg := invite.NewRegistry(r.Config.Root, nil)
	inv := invite.NewServer(node.Host(), reg, func() []ma.Multiaddr { return bootstrapAddrs(node) }, log.With("subsystem", "invite"))
	go func() { _ = inv.Serve(ctx) }()
	defer inv.Close()

	// One verifier for messaging and pub-sub, so a chain checked by one is
	// warm for the other.
	verifier := caps.NewVerifier()
	router, err := msg.New(node, msg.Config{MaxMessage: opts.MaxMessage, Verifier: verifier, Log: log})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer router.Close()
	ps, err := pubsub.New(ctx, node, id, pubsub.Config{Decapsulate: decapsulate(r), Verifier: verifier, Log: log})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer ps.Close()

	srv := &server{repo: r, node: node, msgs: router, pubsub: ps, maxMsg: opts.MaxMessage, invites: reg, custody: custody,
		started: time.Now(), log: log.With("subsystem", "api")}

	// Actors: the runtime Wasm modules and services run in.
	rt, err := actors.New(r.Config.Node, router, actors.WithP2P(node), actors.WithVerifier(verifier), actors.WithPubSub(ps), actors.WithLogger(log))
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer rt.Close()
	srv.actors = rt

	// Blocks: the durable store, the exchange that serves and fetches
	// them, and the replication service over both.
	st := r.Config.Storage
	srv.storeDir = filepath.Join(r.Dir, BlocksDir)
	store, err := leveldb.Open(srv.storeDir, leveldb.WithQuota(st.Quota))
	if err != nil {
		return fmt.Errorf("daemon: block store: %w", err)
	}
	defer store.Close()
	srv.store = store
	xch, err := exchange.New(node, store, exchange.Config{Log: log})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer xch.Close()
	rcfg := replica.Config{Policy: replica.Policy{Default: st.Policy.Default, ByPath: st.Policy.ByPath}, ScrubInterval: st.Scrub, Log: log}
	srv.gcGrace = st.Grace
	srv.replica = replica.New(store, xch, srv.members, rcfg)
	scrubbed := make(chan struct{})
	go func() { defer close(scrubbed); _ = srv.replica.Serve(ctx) }()
	defer func() { cancel(); <-scrubbed }()
	if srv.maxMsg <= 0 {
		srv.maxMsg = msg.DefaultMaxMessage
	}

	// --- File system (daemon/fs.go): client, hosted volumes, mounts. ---
	fsvc, err := startFS(ctx, r, node, id, store, xch, verifier, srv, log)
	if err != nil {
		return err
	}
	defer fsvc.Close()
	// --- end file system ---

	// --- Wasm modules (daemon/wasm.go): runtime and control plane. ---
	wsvc, err := startWasm(ctx, r, id, rt, router, ps, fsvc, verifier, log)
	if err != nil {
		return err
	}
	defer wsvc.Close()
	// --- end Wasm modules ---

	sock := filepath.Join(r.Dir, api.SocketName)
	ln, err := listenUnix(sock)
	if err != nil {
		return err
	}
	// Streaming requests (listen, subscribe) end when apiCtx does.
	apiCtx, stopAPI := context.WithCancel(context.Background())
	defer stopAPI()
	hs := &http.Server{Handler: wsvc.routes(srv, fsvc.routes(srv.routes())), ReadHeaderTimeout: 10 * time.Second, // wsvc: daemon/wasm.go
		BaseContext: func(net.Listener) context.Context { return apiCtx }}
	apiDone := make(chan error, 1)
	go func() { apiDone <- hs.Serve(ln) }()
	defer os.Remove(sock)

	if opts.Ready != nil {
		rd := Ready{Path: r.Config.Node.String(), PeerID: node.Host().ID().String(), Socket: sock}
		for _, a := range node.Addrs() {
			rd.Addrs = append(rd.Addrs, a.String())
		}
		opts.Ready(rd)
	}
	log.Info("serving", "path", r.Config.Node.String(), "peer", node.Host().ID())

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-served:
		if err != nil && ctx.Err() == nil {
			runErr = fmt.Errorf("daemon: p2p: %w", err)
		}
	case err := <-apiDone:
		runErr = fmt.Errorf("daemon: api: %w", err)
	}
	log.Info("shutting down")
	stopAPI()
	shutCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = hs.Shutdown(shutCtx)
	wsvc.Close() // Wasm: daemon/wasm.go; modules stop before the file system closes
	fsvc.Close() // unmounts and flushes while peers are still reachable
	cancel()
	if err := node.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("daemon: closing p2p: %w", err)
	}
	return runErr
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

// bootstrapAddrs is what a joining machine is told to bootstrap from: this
// node's addresses.
func bootstrapAddrs(n *p2p.Node) []ma.Multiaddr { return n.Addrs() }

// listenUnix listens on the API socket with mode 0600. A socket left by a
// daemon that died is removed: holding the lock proves no daemon uses it.
func listenUnix(sock string) (net.Listener, error) {
	if len(sock) >= 104 {
		return nil, fmt.Errorf("daemon: API socket path %s is %d bytes, over the unix socket limit: use a shorter --repo path", sock, len(sock))
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", sock)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("daemon: API socket: %w", err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("daemon: %w", err)
	}
	return ln, nil
}
