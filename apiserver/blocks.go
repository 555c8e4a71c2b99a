package apiserver

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/api/serve"
	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/blocks/replica"
)

// Storage defaults (docs/repo.md).
const (
	defaultGetTimeout = 5 * time.Minute
)

// blockPut is POST /v1/blocks: the body is the file, streamed into the
// sealer; the answer comes once the file is durable (and replicated).
func (s *server) blockPut(ctx context.Context, req api.BlockPutRequest, body io.Reader) (api.BlockPutResult, error) {
	if req.Replicas != 0 && (req.Replicas < 1 || req.Replicas > replica.MaxFactor) {
		return api.BlockPutResult{}, api.Errorf(api.KindInvalid, "replicas %d: want 1..%d", req.Replicas, replica.MaxFactor)
	}
	res, err := s.replica.Put(ctx, body, replica.PutOptions{Replicas: req.Replicas, Path: req.Path})
	out := api.BlockPutResult{Size: res.Size, Blocks: res.Blocks, Replicas: res.Replicas}
	if res.Root.Defined() {
		out.Root, out.Key = res.Root.String(), base64.RawURLEncoding.EncodeToString(res.Key)
	}
	if err != nil {
		if errors.Is(err, replica.ErrReplication) && out.Root != "" {
			err = fmt.Errorf("%w (root %s, key %s)", err, out.Root, out.Key)
		}
		return api.BlockPutResult{}, err
	}
	return out, nil
}

// blockGet is POST /v1/blocks/get: the answer is the plaintext.
func (s *server) blockGet(ctx context.Context, req api.BlockGetRequest, out *serve.RawWriter) error {
	root, err := cid.Decode(req.Root)
	if err != nil {
		return api.Errorf(api.KindInvalid, "root %q: %v", req.Root, err)
	}
	key, err := base64.RawURLEncoding.DecodeString(req.Key)
	if err != nil || len(key) != blocks.KeySize {
		return api.Errorf(api.KindInvalid, "key: want the %d-byte file key in base64url, as `bt block put` printed it", blocks.KeySize)
	}
	timeout := defaultGetTimeout
	if req.Timeout != "" {
		if timeout, err = time.ParseDuration(req.Timeout); err != nil || timeout <= 0 {
			return api.Errorf(api.KindInvalid, "timeout %q: want a positive duration such as 1m", req.Timeout)
		}
	}
	for _, p := range req.From {
		if err := need(p); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return s.replica.Get(ctx, root, key, exchange.Where{Hosts: req.From}, out)
}

func (s *server) repoStat(ctx context.Context, _ api.None) (api.RepoStat, error) {
	st, err := s.store.Stat(ctx)
	if err != nil {
		return api.RepoStat{}, err
	}
	return api.RepoStat{Dir: s.storeDir, Blocks: st.Blocks, Bytes: st.Bytes, Pins: st.Pins, PinnedBlocks: st.PinnedBlocks, Quota: st.Quota}, nil
}

// repoFailed is the line that reports an error of a started repo stream.
func repoFailed(e *api.Error) api.RepoEvent { return api.RepoEvent{Event: "error", Error: e} }

func (s *server) repoGC(ctx context.Context, req api.GCRequest, out *serve.Events[api.RepoEvent]) error {
	grace := s.gcGrace
	if req.Grace != "" {
		var err error
		if grace, err = time.ParseDuration(req.Grace); err != nil || grace < 0 {
			return api.Errorf(api.KindInvalid, "grace %q: want a duration such as 1h (0 collects every unpinned block)", req.Grace)
		}
	}
	out.Start()
	res, err := s.store.GC(ctx, grace, func(p blocks.GCProgress) {
		_ = out.Send(api.RepoEvent{Event: "progress", Scanned: p.Scanned, Deleted: p.Deleted, Freed: p.Freed})
	})
	if err != nil {
		return err
	}
	s.log.Info("gc done", "scanned", res.Scanned, "deleted", res.Deleted, "freed", res.Freed, "kept", res.Kept)
	return out.Send(api.RepoEvent{Event: "done", Scanned: res.Scanned, Deleted: res.Deleted, Freed: res.Freed, Kept: res.Kept})
}

func (s *server) repoVerify(ctx context.Context, req api.VerifyRequest, out *serve.Events[api.RepoEvent]) error {
	out.Start()
	progress := func(p replica.VerifyProgress) {
		_ = out.Send(api.RepoEvent{Event: "progress", Checked: p.Checked, Total: p.Total, Bytes: p.Bytes, NCorrupt: p.Corrupt})
	}
	run := s.replica.Verify
	if req.Repair {
		run = s.replica.Scrub
	}
	res, err := run(ctx, progress)
	if err != nil {
		return err
	}
	return out.Send(api.RepoEvent{Event: "done", Checked: res.Checked, Bytes: res.Bytes, NCorrupt: int64(len(res.Corrupt)),
		Corrupt: res.Corrupt, Missing: res.Missing, Repaired: res.Repaired, Removed: res.Deleted})
}
