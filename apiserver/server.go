package apiserver

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/api"
	"blocktree.dev/bt/api/serve"
	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/replica"
	"blocktree.dev/bt/caps"
	fssvc "blocktree.dev/bt/fsys/service"
	"blocktree.dev/bt/invite"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
	"blocktree.dev/bt/repo"
	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/softkey"
	"blocktree.dev/bt/wasm"
	"blocktree.dev/bt/wasm/deploy"
)

// Config is what the API answers over: the node's components. Every
// field is required except Custody, Started and Log.
type Config struct {
	Repo    *repo.Repo
	Node    *p2p.Node
	Router  *msg.Router
	PubSub  *pubsub.PubSub
	Invites *invite.Registry
	Actors  *actors.Runtime
	// MaxMessage bounds one message sent (the router's limit).
	MaxMessage int64
	Custody    tpm.Info
	Started    time.Time

	// Blocks: the store (in StoreDir), the replication service over it,
	// and the default grace of a garbage collection.
	Store    blocks.PinStore
	StoreDir string
	Replica  *replica.Service
	GCGrace  time.Duration

	// The file system service and the verifier it checks writecaps with.
	FS       *fssvc.Service
	Verifier *caps.Verifier

	// The Wasm runtime, its deployment controller, and a channel closed
	// when they stop (followed logs end then).
	Wasm     *wasm.Runtime
	Deploy   *deploy.Controller
	WasmDone <-chan struct{}

	Log *slog.Logger
}

// New returns the handler of every route of api.Routes over the
// components of cfg. Requests for anything else are invalid.
func New(cfg Config) http.Handler {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &server{repo: cfg.Repo, node: cfg.Node, msgs: cfg.Router, pubsub: cfg.PubSub, maxMsg: cfg.MaxMessage,
		invites: cfg.Invites, custody: cfg.Custody, started: cfg.Started, log: log, actors: cfg.Actors,
		store: cfg.Store, storeDir: cfg.StoreDir, replica: cfg.Replica, gcGrace: cfg.GCGrace}
	f := &fsAPI{Service: cfg.FS, node: cfg.Node, r: cfg.Repo, verify: cfg.Verifier, api: s}
	if cfg.FS != nil {
		f.client, f.nodeW = cfg.FS.Client(), cfg.FS.NodeWritecap()
	}
	w := &wasmAPI{rt: cfg.Wasm, ctl: cfg.Deploy, fs: f, verify: cfg.Verifier, done: cfg.WasmDone}
	if cfg.Repo != nil {
		w.node = cfg.Repo.Config.Node
	}
	if cfg.Deploy != nil {
		w.deploy = cfg.Deploy.Dir()
	}
	if cfg.FS != nil {
		w.signer = cfg.FS.Signer()
	}
	mux := serve.New(log, apiError)
	s.register(mux)
	f.register(mux)
	w.register(mux)
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve.WriteError(w, api.Errorf(api.KindInvalid, "no endpoint %s %s (this daemon speaks docs/api.md v1)", r.Method, r.URL.Path))
	}))
	return mux
}

// server answers the endpoints of the node, messaging, pub-sub, actors
// and blocks. Its fields are set before it serves and not changed after.
type server struct {
	repo    *repo.Repo
	node    *p2p.Node
	msgs    *msg.Router
	pubsub  *pubsub.PubSub
	maxMsg  int64
	invites *invite.Registry
	custody tpm.Info
	started time.Time
	log     *slog.Logger

	actors   *actors.Runtime
	store    blocks.PinStore
	storeDir string
	replica  *replica.Service
	gcGrace  time.Duration
}

// maxBody bounds a request body.
const maxBody = serve.MaxBody

// register adds the routes of s to mux.
func (s *server) register(mux *serve.Mux) {
	serve.Unary(mux, api.RouteStatus, maxBody, s.status)
	serve.Unary(mux, api.RoutePeers, maxBody, s.peers)
	serve.Unary(mux, api.RouteResolve, maxBody, s.resolve)
	serve.Unary(mux, api.RoutePing, maxBody, s.ping)
	serve.Unary(mux, api.RouteInvite, maxBody, s.invite)
	// A payload travels base64 in JSON: 4/3 of its size, plus the envelope.
	serve.Unary(mux, api.RouteSend, s.maxMsg/3*4+maxBody, s.send)
	serve.Stream(mux, api.RouteListen, s.listen, nil)
	serve.Unary(mux, api.RoutePublish, pubsub.DefaultMaxMessage/3*4+maxBody, s.publish)
	serve.Stream(mux, api.RouteSubscribe, s.subscribe, nil)
	serve.Unary(mux, api.RouteActors, maxBody, s.actorsList)
	serve.Upload(mux, api.RouteBlockPut, s.blockPut)
	serve.Download(mux, api.RouteBlockGet, s.blockGet)
	serve.Unary(mux, api.RouteRepoStat, maxBody, s.repoStat)
	serve.Stream(mux, api.RouteRepoGC, s.repoGC, repoFailed)
	serve.Stream(mux, api.RouteRepoVerify, s.repoVerify, repoFailed)
	newBenchAPI(s).register(mux) // bench.go
}

// need checks that a required path p of a request is there: a missing
// one is invalid as an empty path is.
func need(p paths.Path) error {
	if p.IsZero() {
		_, err := paths.Parse("")
		return api.Errorf(api.KindInvalid, "%v", err)
	}
	return nil
}

func strs(as []ma.Multiaddr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func (s *server) status(ctx context.Context, _ api.None) (api.Status, error) {
	st := api.Status{
		Path: s.repo.Config.Node, PeerID: paths.ID(s.node.Host().ID().String()), NodeID: s.repo.Config.NodeID,
		Addrs: strs(s.node.Addrs()), Custody: api.Custody{Kind: string(s.custody.Kind), Device: s.custody.Device, Algorithm: s.custody.Algorithm},
		RoutingTable: s.node.RoutingTableSize(), Peers: len(s.node.Host().Network().Peers()), Started: s.started,
		Uptime: time.Since(s.started).Truncate(time.Second).String(),
	}
	if pub := s.node.Published(); pub.Err == nil && !pub.At.IsZero() {
		st.RecordExpiry = pub.Expiry
	}
	return st, nil
}

func (s *server) peers(ctx context.Context, _ api.None) ([]api.Peer, error) {
	out := []api.Peer{}
	for _, p := range s.node.Peers() {
		ap := api.Peer{PeerID: paths.ID(p.ID.String()), Addrs: strs(p.Addrs), Unverified: p.Unverified}
		if !p.Path.IsZero() {
			ap.Path, ap.Verified = p.Path, true
		}
		out = append(out, ap)
	}
	return out, nil
}

func (s *server) resolve(ctx context.Context, req api.ResolveRequest) (api.Resolution, error) {
	res, err := s.node.Resolve(ctx, req.Path)
	if err != nil {
		return api.Resolution{}, err
	}
	return api.Resolution{Path: res.Path, PeerID: paths.ID(res.Peer.String()), Addrs: strs(res.Addrs),
		Expiry: res.Expiry, Seq: res.Seq, FromCache: res.FromCache}, nil
}

func (s *server) ping(ctx context.Context, req api.PingRequest) (api.PingResult, error) {
	if err := need(req.Path); err != nil {
		return api.PingResult{}, err
	}
	ctx, cancel, err := deadline(ctx, req.Timeout)
	if err != nil {
		return api.PingResult{}, err
	}
	defer cancel()
	rtt, err := s.node.Ping(ctx, req.Path)
	if err != nil {
		return api.PingResult{}, err
	}
	res := api.PingResult{Path: req.Path, RTTms: float64(rtt.Microseconds()) / 1000}
	if rr, err := s.node.Resolve(ctx, req.Path); err == nil {
		res.PeerID = paths.ID(rr.Peer.String())
	}
	return res, nil
}

// nameCheckTimeout bounds the DHT lookup that checks a name is free.
const nameCheckTimeout = 10 * time.Second

func (s *server) invite(ctx context.Context, req api.InviteRequest) (api.InviteResult, error) {
	var none api.InviteResult
	if err := paths.ValidComponent(req.Name); err != nil {
		return none, api.Errorf(api.KindInvalid, "name %q: %v", req.Name, err)
	}
	p, err := paths.New(s.repo.Config.Root, req.Name)
	if err != nil {
		return none, api.Errorf(api.KindInvalid, "%v", err)
	}
	if req.Name == s.repo.Config.Name {
		return none, api.Errorf(api.KindExists, "%s is this node's own path: choose another name", p)
	}
	del, err := softkey.Unmarshal(req.Delegate, nil)
	if err != nil {
		return none, api.Errorf(api.KindInvalid, "delegate key: %v", err)
	}
	grant, err := caps.Decode(req.Grant)
	if err != nil {
		return none, api.Errorf(api.KindInvalid, "grant: %v", err)
	}
	// A name some node already publishes is taken.
	cctx, cancel := context.WithTimeout(ctx, nameCheckTimeout)
	res, err := s.node.Resolve(cctx, p)
	cancel()
	if err == nil {
		return none, api.Errorf(api.KindExists, "%s is in use by peer %s: choose another name", p, res.Peer)
	}
	secret, err := s.invites.Add(invite.Invite{Name: req.Name, Delegate: del, Grant: grant, Expiry: req.Expiry})
	if err != nil {
		if errors.Is(err, invite.ErrNameInUse) {
			return none, api.Errorf(api.KindExists, "%v: choose another name", err)
		}
		return none, api.Errorf(api.KindInvalid, "%v", err)
	}
	addrs := s.node.Addrs()
	if len(addrs) == 0 {
		return none, api.Errorf(api.KindUnavailable, "this daemon has no addresses to put in the token")
	}
	tok := invite.Token{Root: s.repo.Config.Root, Name: req.Name, Addrs: addrs, Secret: secret}
	s.log.Info("invite created", "path", p.String(), "expiry", req.Expiry)
	return api.InviteResult{Name: req.Name, Path: p, Token: tok.String(), Expiry: req.Expiry}, nil
}
