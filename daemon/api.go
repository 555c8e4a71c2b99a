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
	unary(s, mux, api.RouteStatus, maxBody, s.status)
	unary(s, mux, api.RoutePeers, maxBody, s.peers)
	unary(s, mux, api.RouteResolve, maxBody, s.resolve)
	unary(s, mux, api.RoutePing, maxBody, s.ping)
	unary(s, mux, api.RouteInvite, maxBody, s.invite)
	// A payload travels base64 in JSON: 4/3 of its size, plus the envelope.
	unary(s, mux, api.RouteSend, s.maxMsg/3*4+maxBody, s.send)
	stream(s, mux, api.RouteListen, s.listen, nil)
	unary(s, mux, api.RoutePublish, pubsub.DefaultMaxMessage/3*4+maxBody, s.publish)
	stream(s, mux, api.RouteSubscribe, s.subscribe, nil)
	unary(s, mux, api.RouteActors, maxBody, s.actorsList)
	upload(s, mux, api.RouteBlockPut, s.blockPut)
	download(s, mux, api.RouteBlockGet, s.blockGet)
	unary(s, mux, api.RouteRepoStat, maxBody, s.repoStat)
	stream(s, mux, api.RouteRepoGC, s.repoGC, repoFailed)
	stream(s, mux, api.RouteRepoVerify, s.repoVerify, repoFailed)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, api.Errorf(api.KindInvalid, "no endpoint %s %s (this daemon speaks docs/api.md v1)", r.Method, r.URL.Path))
	})
	return mux
}

// ---- the handler machinery: one per api.Shape ----

// unary registers f as the handler of route r, a Unary route: the request
// is decoded (from a body of at most limit bytes, or the query), f's answer
// encoded as JSON, and f's error written as the API error it is.
func unary[Req, Resp any](s *server, mux *http.ServeMux, r api.Route[Req, Resp], limit int64, f func(context.Context, Req) (Resp, error)) {
	info := r.Info()
	mux.HandleFunc(r.Pattern(), func(w http.ResponseWriter, hr *http.Request) {
		hr.Body = http.MaxBytesReader(w, hr.Body, limit)
		req, err := decodeRequest[Req](info, hr)
		var resp Resp
		if err == nil {
			resp, err = f(hr.Context(), req)
		}
		if err != nil {
			s.fail(w, hr, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

// upload registers f as the handler of the Upload route r: the request
// comes from the query, and f reads the raw body.
func upload[Req, Resp any](s *server, mux *http.ServeMux, r api.Route[Req, Resp], f func(context.Context, Req, io.Reader) (Resp, error)) {
	info := r.Info()
	mux.HandleFunc(r.Pattern(), func(w http.ResponseWriter, hr *http.Request) {
		req, err := decodeRequest[Req](info, hr)
		var resp Resp
		if err == nil {
			resp, err = f(hr.Context(), req, hr.Body)
		}
		if err != nil {
			s.fail(w, hr, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

// events is the answer of a Stream route: JSON lines, each flushed as it
// is sent. The 200 status goes with the first line (or start); an error
// before it is answered with the error's status.
type events[Ev any] struct {
	w       http.ResponseWriter
	f       http.Flusher
	enc     *json.Encoder
	started bool
}

// start sends the status and headers now: from here on an error is
// reported in the stream.
func (e *events[Ev]) start() {
	e.begin()
	e.flush()
}

func (e *events[Ev]) begin() {
	if !e.started {
		e.started = true
		e.w.Header().Set("Content-Type", "application/x-ndjson")
		e.w.WriteHeader(http.StatusOK)
	}
}

func (e *events[Ev]) flush() {
	if e.f != nil {
		e.f.Flush()
	}
}

// send writes one line and flushes it; an error means the client went away.
func (e *events[Ev]) send(ev Ev) error {
	e.begin()
	if err := e.enc.Encode(ev); err != nil {
		return err
	}
	e.flush()
	return nil
}

// stream registers f as the handler of the Stream route r. f sends the
// lines and returns when the stream ends (its context ends when the client
// goes away or the daemon shuts down). An error f returns before the first
// line is answered as the API error it is; one after is sent as the line
// failed makes of it, or, with failed nil, just ends the stream.
func stream[Req, Ev any](s *server, mux *http.ServeMux, r api.Route[Req, Ev], f func(context.Context, Req, *events[Ev]) error, failed func(*api.Error) Ev) {
	info := r.Info()
	mux.HandleFunc(r.Pattern(), func(w http.ResponseWriter, hr *http.Request) {
		hr.Body = http.MaxBytesReader(w, hr.Body, maxBody)
		req, err := decodeRequest[Req](info, hr)
		if err != nil {
			s.fail(w, hr, err)
			return
		}
		fl, _ := w.(http.Flusher)
		ev := &events[Ev]{w: w, f: fl, enc: json.NewEncoder(w)}
		err = f(hr.Context(), req, ev)
		switch {
		case err == nil:
		case !ev.started:
			s.fail(w, hr, err)
		case failed != nil:
			ae := apiError(err)
			s.log.Debug("stream failed", "path", hr.URL.Path, "kind", ae.Kind, "err", ae.Message)
			_ = ev.send(failed(ae))
		}
	})
}

// download registers f as the handler of the Download route r: f writes
// the raw answer to out. An error before the first byte is answered as the
// API error it is; one after goes in the api.TrailerError trailer.
func download[Req any](s *server, mux *http.ServeMux, r api.Route[Req, api.None], f func(context.Context, Req, *rawWriter) error) {
	info := r.Info()
	mux.HandleFunc(r.Pattern(), func(w http.ResponseWriter, hr *http.Request) {
		hr.Body = http.MaxBytesReader(w, hr.Body, maxBody)
		req, err := decodeRequest[Req](info, hr)
		if err != nil {
			s.fail(w, hr, err)
			return
		}
		w.Header().Set("Trailer", api.TrailerError)
		out := &rawWriter{w: w}
		err = f(hr.Context(), req, out)
		switch {
		case err == nil:
			out.start()
		case !out.started:
			s.fail(w, hr, err)
		default:
			b, _ := json.Marshal(apiError(err))
			w.Header().Set(api.TrailerError, string(b))
		}
	})
}

// rawWriter sends the 200 header before the first byte of a raw answer, so
// an error before that can still be answered with an error status.
type rawWriter struct {
	w       http.ResponseWriter
	started bool
}

// Header is the answer's header, to set before the first byte.
func (rw *rawWriter) Header() http.Header { return rw.w.Header() }

func (rw *rawWriter) start() {
	if rw.started {
		return
	}
	rw.started = true
	rw.w.Header().Set("Content-Type", "application/octet-stream")
	rw.w.WriteHeader(http.StatusOK)
}

func (rw *rawWriter) Write(b []byte) (int, error) {
	rw.start()
	return rw.w.Write(b)
}

// decodeRequest decodes the request of a route: nothing for api.None, the
// query for a GET or an Upload, else the JSON body (unknown fields and
// trailing data refused).
func decodeRequest[Req any](info api.RouteInfo, r *http.Request) (Req, error) {
	var req Req
	if _, none := any(req).(api.None); none {
		return req, nil
	}
	if info.Method == http.MethodGet || info.Shape == api.Upload {
		qs, ok := any(&req).(api.QuerySetter)
		if !ok {
			return req, api.Errorf(api.KindInternal, "%s: request %T has no query form", info.Path, req)
		}
		return req, qs.SetQuery(r.URL.Query())
	}
	d := json.NewDecoder(r.Body)
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		return req, api.Errorf(api.KindInvalid, "request body: %v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return req, api.Errorf(api.KindInvalid, "request body: trailing data")
	}
	return req, nil
}

// fail answers a request with err as the API error it is.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	ae := apiError(err)
	s.log.Debug("request failed", "method", r.Method, "path", r.URL.Path, "kind", ae.Kind, "err", ae.Message)
	writeErr(w, ae)
}

// writeErr answers with e: its kind's status and {"error": e}.
func writeErr(w http.ResponseWriter, e *api.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Kind.Status())
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: e})
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
