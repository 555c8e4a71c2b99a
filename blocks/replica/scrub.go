package replica

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
)

// VerifyProgress is reported while Verify or Scrub runs.
type VerifyProgress struct {
	Checked int64 `json:"checked"` // blocks read and verified so far
	Total   int64 `json:"total"`   // blocks in the store when it started
	Bytes   int64 `json:"bytes"`   // bytes verified so far
	Corrupt int64 `json:"corrupt"` // blocks that failed verification so far
}

// VerifyResult is what a finished Verify or Scrub found and did.
type VerifyResult struct {
	Checked  int64    `json:"checked"`
	Bytes    int64    `json:"bytes"`
	Corrupt  []string `json:"corrupt"`  // CIDs whose stored bytes failed verification
	Missing  []string `json:"missing"`  // pinned CIDs not in the store (after repair: still missing)
	Repaired []string `json:"repaired"` // CIDs fetched again from replicas (Scrub only)
	Deleted  []string `json:"deleted"`  // corrupt, unpinned blocks removed (Scrub only)
}

// maxListed bounds the CIDs a result lists per category.
const maxListed = 1000

// Verify reads every stored block and checks it against its CID, and
// checks that every pinned block is present. It changes nothing. progress,
// if not nil, is called after each block (at most every 100 ms and at the
// end). Safe for concurrent use with everything but Scrub's repairs.
func (s *Service) Verify(ctx context.Context, progress func(VerifyProgress)) (VerifyResult, error) {
	return s.check(ctx, false, progress)
}

// Scrub is Verify that repairs: a corrupt block is deleted and, when a pin
// names it, fetched again from replicas; missing pinned blocks are fetched;
// pinned file roots are announced again in the DHT.
func (s *Service) Scrub(ctx context.Context, progress func(VerifyProgress)) (VerifyResult, error) {
	s.scrubMu.Lock()
	defer s.scrubMu.Unlock()
	return s.check(ctx, true, progress)
}

func (s *Service) check(ctx context.Context, repair bool, progress func(VerifyProgress)) (VerifyResult, error) {
	var res VerifyResult
	total, _, err := s.store.Size(ctx)
	if err != nil {
		return res, fmt.Errorf("replica: verify: %w", err)
	}
	p := VerifyProgress{Total: total}
	var last time.Time
	report := func(force bool) {
		if progress != nil && (force || time.Since(last) >= 100*time.Millisecond) {
			last = time.Now()
			progress(p)
		}
	}
	report(true)
	var corrupt []cid.Cid
	for c, err := range s.store.All(ctx) {
		if err != nil {
			return res, fmt.Errorf("replica: verify: %w", err)
		}
		data, err := s.store.Get(ctx, c)
		switch {
		case err == nil:
			p.Bytes += int64(len(data))
		case errors.Is(err, blocks.ErrIntegrity):
			p.Corrupt++
			corrupt = append(corrupt, c)
			s.log.Warn("corrupt block", "cid", c, "err", err)
		case errors.Is(err, blocks.ErrNotFound): // deleted meanwhile (GC)
		default:
			return res, fmt.Errorf("replica: verify: %w", err)
		}
		p.Checked++
		report(false)
	}
	report(true)
	res.Checked, res.Bytes = p.Checked, p.Bytes
	for _, c := range corrupt {
		res.Corrupt = appendListed(res.Corrupt, c)
	}
	// Pinned blocks: missing ones, grouped by the file root to look under.
	missing := make(map[cid.Cid][]cid.Cid) // root (or Undef) → CIDs
	var roots []cid.Cid
	for pin, err := range s.store.Pins(ctx) {
		if err != nil {
			return res, fmt.Errorf("replica: verify: %w", err)
		}
		root, _ := rootOfPin(pin.Name)
		if root.Defined() {
			roots = append(roots, root)
		}
		for c, err := range s.store.Pinned(ctx, pin.Name) {
			if err != nil {
				if errors.Is(err, blocks.ErrNotFound) {
					break // unpinned meanwhile
				}
				return res, fmt.Errorf("replica: verify: %w", err)
			}
			ok, err := s.store.Has(ctx, c)
			if err != nil {
				return res, fmt.Errorf("replica: verify: %w", err)
			}
			if !ok || containsCID(corrupt, c) {
				missing[root] = append(missing[root], c)
			}
		}
	}
	if !repair {
		for _, cs := range missing {
			for _, c := range cs {
				if !containsCID(corrupt, c) {
					res.Missing = appendListed(res.Missing, c)
				}
			}
		}
		return res, nil
	}
	for _, c := range corrupt {
		if err := s.store.Delete(ctx, c); err != nil {
			return res, fmt.Errorf("replica: scrub: %w", err)
		}
		pinned, err := s.store.IsPinned(ctx, c)
		if err != nil {
			return res, fmt.Errorf("replica: scrub: %w", err)
		}
		if !pinned {
			res.Deleted = appendListed(res.Deleted, c)
		}
	}
	for root, cs := range missing {
		got := make(map[cid.Cid]bool)
		err := s.x.Fetch(ctx, cs, exchange.Where{Root: root}, func(b blocks.Block) error {
			got[b.CID] = true
			return nil
		})
		for _, c := range cs {
			if got[c] {
				res.Repaired = appendListed(res.Repaired, c)
			} else {
				res.Missing = appendListed(res.Missing, c)
			}
		}
		if err != nil {
			s.log.Warn("scrub could not repair every block", "root", root, "err", err)
		}
	}
	for _, root := range roots {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.x.Provide(pctx, root); err != nil {
			s.log.Debug("provide failed", "root", root, "err", err)
		}
		cancel()
	}
	return res, ctx.Err()
}

func appendListed(list []string, c cid.Cid) []string {
	if len(list) >= maxListed {
		return list
	}
	return append(list, c.String())
}

func containsCID(cs []cid.Cid, c cid.Cid) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// Serve scrubs the store every cfg.ScrubInterval until ctx ends (it returns
// nil then). With a negative interval it only waits for ctx.
func (s *Service) Serve(ctx context.Context) error {
	if s.cfg.ScrubInterval < 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(s.cfg.ScrubInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		res, err := s.Scrub(ctx, nil)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("scrub failed", "err", err)
			continue
		}
		s.log.Info("scrub done", "checked", res.Checked, "corrupt", len(res.Corrupt), "repaired", len(res.Repaired), "missing", len(res.Missing))
	}
}
