package daemon

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/blocks/replica"
)

// Storage defaults (docs/repo.md).
const (
	defaultGetTimeout = 5 * time.Minute
)

// blockErr turns a block-layer error into an API error of the right kind.
func blockErr(err error) error {
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, blocks.ErrNoSpace):
		return api.Errorf(api.KindUnavailable, "%v (free space, raise storage.quota, or run `bt repo gc`)", err)
	case errors.Is(err, blocks.ErrNotFound):
		return api.Errorf(api.KindNotFound, "%v", err)
	case errors.Is(err, blocks.ErrIntegrity):
		return api.Errorf(api.KindDenied, "%v (a wrong key, or corrupt data: run `bt repo verify`)", err)
	case errors.Is(err, blocks.ErrTooLarge):
		return api.Errorf(api.KindInvalid, "%v", err)
	case errors.Is(err, replica.ErrReplication):
		return api.Errorf(api.KindUnreachable, "%v", err)
	case errors.Is(err, replica.ErrBadRoot):
		return api.Errorf(api.KindInvalid, "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(api.KindUnreachable, "%v", err)
	}
	return err
}

// blockPut is POST /v1/blocks: the body is the file, streamed into the
// sealer; the answer comes once the file is durable (and replicated).
func (s *server) blockPut(w http.ResponseWriter, r *http.Request) {
	fail := func(err error) {
		err = blockErr(err)
		ae := apiError(err)
		s.log.Debug("block put failed", "kind", ae.Kind, "err", ae.Message)
		writeErr(w, ae)
	}
	q := r.URL.Query()
	var opt replica.PutOptions
	if v := q.Get("replicas"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > replica.MaxFactor {
			fail(api.Errorf(api.KindInvalid, "replicas %q: want 1..%d", v, replica.MaxFactor))
			return
		}
		opt.Replicas = n
	}
	if v := q.Get("path"); v != "" {
		p, err := parsePath(v)
		if err != nil {
			fail(err)
			return
		}
		opt.Path = p
	}
	res, err := s.replica.Put(r.Context(), r.Body, opt)
	out := api.BlockPutResult{Size: res.Size, Blocks: res.Blocks}
	if res.Root.Defined() {
		out.Root, out.Key = res.Root.String(), base64.RawURLEncoding.EncodeToString(res.Key)
	}
	for _, p := range res.Replicas {
		out.Replicas = append(out.Replicas, p.String())
	}
	if err != nil {
		if errors.Is(err, replica.ErrReplication) && out.Root != "" {
			err = fmt.Errorf("%w (root %s, key %s)", err, out.Root, out.Key)
		}
		fail(err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// blockGet is POST /v1/blocks/get: the answer is the plaintext.
func (s *server) blockGet(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	fail := func(err error) {
		err = blockErr(err)
		ae := apiError(err)
		writeErr(w, ae)
	}
	var req api.BlockGetRequest
	if err := decode(r, &req); err != nil {
		fail(err)
		return
	}
	root, err := cid.Decode(req.Root)
	if err != nil {
		fail(api.Errorf(api.KindInvalid, "root %q: %v", req.Root, err))
		return
	}
	key, err := base64.RawURLEncoding.DecodeString(req.Key)
	if err != nil || len(key) != blocks.KeySize {
		fail(api.Errorf(api.KindInvalid, "key: want the %d-byte file key in base64url, as `bt block put` printed it", blocks.KeySize))
		return
	}
	timeout := defaultGetTimeout
	if req.Timeout != "" {
		if timeout, err = time.ParseDuration(req.Timeout); err != nil || timeout <= 0 {
			fail(api.Errorf(api.KindInvalid, "timeout %q: want a positive duration such as 1m", req.Timeout))
			return
		}
	}
	var where exchange.Where
	for _, f := range req.From {
		p, err := parsePath(f)
		if err != nil {
			fail(err)
			return
		}
		where.Hosts = append(where.Hosts, p)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	w.Header().Set("Trailer", api.TrailerError)
	sw := &startWriter{w: w}
	err = s.replica.Get(ctx, root, key, where, sw)
	if err == nil {
		if !sw.started {
			sw.start()
		}
		return
	}
	if !sw.started {
		fail(err)
		return
	}
	err = blockErr(err)
	ae := apiError(err)
	b, _ := json.Marshal(ae)
	w.Header().Set(api.TrailerError, string(b))
}

// startWriter sends the 200 header before the first byte of a body, so an
// error before that can still be answered with an error status.
type startWriter struct {
	w       http.ResponseWriter
	started bool
}

func (sw *startWriter) start() {
	sw.started = true
	sw.w.Header().Set("Content-Type", "application/octet-stream")
	sw.w.WriteHeader(http.StatusOK)
}

func (sw *startWriter) Write(b []byte) (int, error) {
	if !sw.started {
		sw.start()
	}
	return sw.w.Write(b)
}

func (s *server) repoStat(ctx context.Context, r *http.Request) (any, error) {
	st, err := s.store.Stat(ctx)
	if err != nil {
		return nil, blockErr(err)
	}
	return api.RepoStat{Dir: s.storeDir, Blocks: st.Blocks, Bytes: st.Bytes, Pins: st.Pins, PinnedBlocks: st.PinnedBlocks, Quota: st.Quota}, nil
}

// eventStream answers a long repo operation with JSON lines.
type eventStream struct {
	w  http.ResponseWriter
	f  http.Flusher
	en *json.Encoder
}

func newEventStream(w http.ResponseWriter) *eventStream {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	return &eventStream{w: w, f: f, en: json.NewEncoder(w)}
}

func (es *eventStream) send(ev api.RepoEvent) {
	_ = es.en.Encode(ev)
	if es.f != nil {
		es.f.Flush()
	}
}

func (es *eventStream) fail(err error) {
	err = blockErr(err)
	ae := apiError(err)
	es.send(api.RepoEvent{Event: "error", Error: ae})
}

func (s *server) repoGC(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var req api.GCRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err.(*api.Error))
		return
	}
	grace := s.gcGrace
	if req.Grace != "" {
		var err error
		if grace, err = time.ParseDuration(req.Grace); err != nil || grace < 0 {
			writeErr(w, api.Errorf(api.KindInvalid, "grace %q: want a duration such as 1h (0 collects every unpinned block)", req.Grace))
			return
		}
	}
	es := newEventStream(w)
	res, err := s.store.GC(r.Context(), grace, func(p blocks.GCProgress) {
		es.send(api.RepoEvent{Event: "progress", Scanned: p.Scanned, Deleted: p.Deleted, Freed: p.Freed})
	})
	if err != nil {
		es.fail(err)
		return
	}
	s.log.Info("gc done", "scanned", res.Scanned, "deleted", res.Deleted, "freed", res.Freed, "kept", res.Kept)
	es.send(api.RepoEvent{Event: "done", Scanned: res.Scanned, Deleted: res.Deleted, Freed: res.Freed, Kept: res.Kept})
}

func (s *server) repoVerify(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var req api.VerifyRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err.(*api.Error))
		return
	}
	es := newEventStream(w)
	progress := func(p replica.VerifyProgress) {
		es.send(api.RepoEvent{Event: "progress", Checked: p.Checked, Total: p.Total, Bytes: p.Bytes, NCorrupt: p.Corrupt})
	}
	run := s.replica.Verify
	if req.Repair {
		run = s.replica.Scrub
	}
	res, err := run(r.Context(), progress)
	if err != nil {
		es.fail(err)
		return
	}
	es.send(api.RepoEvent{Event: "done", Checked: res.Checked, Bytes: res.Bytes, NCorrupt: int64(len(res.Corrupt)),
		Corrupt: res.Corrupt, Missing: res.Missing, Repaired: res.Repaired, Removed: res.Deleted})
}

// members lists the verified, connected nodes of this node's domain.
func (s *server) members() []replica.Member {
	var out []replica.Member
	for _, p := range s.node.Peers() {
		if p.Path.IsZero() || p.Path.Root() != s.repo.Config.Root || p.Path == s.repo.Config.Node {
			continue
		}
		out = append(out, replica.Member{ID: p.ID, Path: p.Path})
	}
	return out
}
