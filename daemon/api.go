package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/api"
	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/replica"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/invite"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
	"blocktree.dev/bt/repo"
	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/softkey"
)

// server answers the local API. Its fields are set before it serves and
// not changed after.
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
const maxBody = 1 << 20

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.handle(s.status))
	mux.HandleFunc("GET /v1/peers", s.handle(s.peers))
	mux.HandleFunc("GET /v1/resolve", s.handle(s.resolve))
	mux.HandleFunc("POST /v1/ping", s.handle(s.ping))
	mux.HandleFunc("POST /v1/invites", s.handle(s.invite))
	// A payload travels base64 in JSON: 4/3 of its size, plus the envelope.
	mux.HandleFunc("POST /v1/send", s.handleN(s.maxMsg/3*4+maxBody, s.send))
	mux.HandleFunc("POST /v1/listen", s.listen)
	mux.HandleFunc("POST /v1/publish", s.handleN(pubsub.DefaultMaxMessage/3*4+maxBody, s.publish))
	mux.HandleFunc("POST /v1/subscribe", s.subscribe)
	mux.HandleFunc("GET /v1/actors", s.handle(s.actorsList))
	mux.HandleFunc("POST /v1/blocks", s.blockPut)
	mux.HandleFunc("POST /v1/blocks/get", s.blockGet)
	mux.HandleFunc("GET /v1/repo/stat", s.handle(s.repoStat))
	mux.HandleFunc("POST /v1/repo/gc", s.repoGC)
	mux.HandleFunc("POST /v1/repo/verify", s.repoVerify)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, api.Errorf(api.KindInvalid, "no endpoint %s %s (this daemon speaks docs/api.md v1)", r.Method, r.URL.Path))
	})
	return mux
}

// handle adapts a handler that returns a value or an error.
func (s *server) handle(f func(context.Context, *http.Request) (any, error)) http.HandlerFunc {
	return s.handleN(maxBody, f)
}

// handleN is handle with a body limit of limit bytes.
func (s *server) handleN(limit int64, f func(context.Context, *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		v, err := f(r.Context(), r)
		if err != nil {
			ae := apiError(err)
			s.log.Debug("request failed", "method", r.Method, "path", r.URL.Path, "kind", ae.Kind, "err", ae.Message)
			writeErr(w, ae)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
}

// apiError is err as the API error the client gets: err itself when it is
// one, else an internal error carrying its text.
func apiError(err error) *api.Error {
	var ae *api.Error
	if !errors.As(err, &ae) {
		ae = api.Errorf(api.KindInternal, "%v", err)
	}
	return ae
}

func writeErr(w http.ResponseWriter, e *api.Error) {
	code := map[api.Kind]int{
		api.KindInvalid: http.StatusBadRequest, api.KindNotFound: http.StatusNotFound,
		api.KindUnreachable: http.StatusGatewayTimeout, api.KindDenied: http.StatusForbidden,
		api.KindExists: http.StatusConflict, api.KindUnavailable: http.StatusServiceUnavailable,
	}[e.Kind]
	if code == 0 {
		code = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]*api.Error{"error": e})
}

func decode(r *http.Request, v any) error {
	d := json.NewDecoder(r.Body)
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return api.Errorf(api.KindInvalid, "request body: %v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return api.Errorf(api.KindInvalid, "request body: trailing data")
	}
	return nil
}

func parsePath(s string) (paths.Path, error) {
	p, err := paths.Parse(s)
	if err != nil {
		return paths.Path{}, api.Errorf(api.KindInvalid, "%v", err)
	}
	return p, nil
}

func strs(as []ma.Multiaddr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

// p2pErr turns a p2p error into an API error of the right kind.
func p2pErr(err error) error {
	switch {
	case errors.Is(err, p2p.ErrNotFound), errors.Is(err, p2p.ErrExpired), errors.Is(err, p2p.ErrBadRecord):
		return api.Errorf(api.KindNotFound, "%v", err)
	case errors.Is(err, p2p.ErrNotAuthenticated):
		return api.Errorf(api.KindDenied, "%v", err)
	case errors.Is(err, p2p.ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(api.KindUnreachable, "%v", err)
	}
	return err
}

func (s *server) status(ctx context.Context, r *http.Request) (any, error) {
	st := api.Status{
		Path: s.repo.Config.Node.String(), PeerID: s.node.Host().ID().String(), NodeID: string(s.repo.Config.NodeID),
		Addrs: strs(s.node.Addrs()), Custody: s.custody, RoutingTable: s.node.RoutingTableSize(),
		Peers: len(s.node.Host().Network().Peers()), Started: s.started,
		Uptime: time.Since(s.started).Truncate(time.Second).String(),
	}
	if pub := s.node.Published(); pub.Err == nil && !pub.At.IsZero() {
		st.RecordExpiry = pub.Expiry
	}
	return st, nil
}

func (s *server) peers(ctx context.Context, r *http.Request) (any, error) {
	out := []api.Peer{}
	for _, p := range s.node.Peers() {
		ap := api.Peer{PeerID: p.ID.String(), Addrs: strs(p.Addrs), Unverified: p.Unverified}
		if !p.Path.IsZero() {
			ap.Path, ap.Verified = p.Path.String(), true
		}
		out = append(out, ap)
	}
	return out, nil
}

func (s *server) resolve(ctx context.Context, r *http.Request) (any, error) {
	p, err := parsePath(r.URL.Query().Get("path"))
	if err != nil {
		return nil, err
	}
	res, err := s.node.Resolve(ctx, p)
	if err != nil {
		return nil, p2pErr(err)
	}
	return api.Resolution{Path: res.Path.String(), PeerID: res.Peer.String(), Addrs: strs(res.Addrs),
		Expiry: res.Expiry, Seq: res.Seq, FromCache: res.FromCache}, nil
}

func (s *server) ping(ctx context.Context, r *http.Request) (any, error) {
	var req api.PingRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	p, err := parsePath(req.Path)
	if err != nil {
		return nil, err
	}
	timeout := 10 * time.Second
	if req.Timeout != "" {
		if timeout, err = time.ParseDuration(req.Timeout); err != nil || timeout <= 0 {
			return nil, api.Errorf(api.KindInvalid, "timeout %q: want a positive duration such as 5s", req.Timeout)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rtt, err := s.node.Ping(ctx, p)
	if err != nil {
		return nil, p2pErr(err)
	}
	res := api.PingResult{Path: p.String(), RTTms: float64(rtt.Microseconds()) / 1000}
	if rr, err := s.node.Resolve(ctx, p); err == nil {
		res.PeerID = rr.Peer.String()
	}
	return res, nil
}

// nameCheckTimeout bounds the DHT lookup that checks a name is free.
const nameCheckTimeout = 10 * time.Second

func (s *server) invite(ctx context.Context, r *http.Request) (any, error) {
	var req api.InviteRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if err := paths.ValidComponent(req.Name); err != nil {
		return nil, api.Errorf(api.KindInvalid, "name %q: %v", req.Name, err)
	}
	p, err := paths.New(s.repo.Config.Root, req.Name)
	if err != nil {
		return nil, api.Errorf(api.KindInvalid, "%v", err)
	}
	if req.Name == s.repo.Config.Name {
		return nil, api.Errorf(api.KindExists, "%s is this node's own path: choose another name", p)
	}
	del, err := softkey.Unmarshal(req.Delegate, nil)
	if err != nil {
		return nil, api.Errorf(api.KindInvalid, "delegate key: %v", err)
	}
	grant, err := caps.Decode(req.Grant)
	if err != nil {
		return nil, api.Errorf(api.KindInvalid, "grant: %v", err)
	}
	// A name some node already publishes is taken.
	cctx, cancel := context.WithTimeout(ctx, nameCheckTimeout)
	res, err := s.node.Resolve(cctx, p)
	cancel()
	if err == nil {
		return nil, api.Errorf(api.KindExists, "%s is in use by peer %s: choose another name", p, res.Peer)
	}
	secret, err := s.invites.Add(invite.Invite{Name: req.Name, Delegate: del, Grant: grant, Expiry: req.Expiry})
	if err != nil {
		if errors.Is(err, invite.ErrNameInUse) {
			return nil, api.Errorf(api.KindExists, "%v: choose another name", err)
		}
		return nil, api.Errorf(api.KindInvalid, "%v", err)
	}
	addrs := s.node.Addrs()
	if len(addrs) == 0 {
		return nil, api.Errorf(api.KindUnavailable, "this daemon has no addresses to put in the token")
	}
	tok := invite.Token{Root: s.repo.Config.Root, Name: req.Name, Addrs: addrs, Secret: secret}
	s.log.Info("invite created", "path", p.String(), "expiry", req.Expiry)
	return api.InviteResult{Name: req.Name, Path: p.String(), Token: tok.String(), Expiry: req.Expiry}, nil
}
