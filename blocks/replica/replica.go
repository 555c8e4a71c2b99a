// Package replica is a node's block service: it seals files into the
// local store, keeps them at their replication factor on other nodes of the
// domain, reads them back from wherever their blocks are, and scrubs the
// local store (re-verifies every block and repairs missing or corrupt ones
// from replicas).
//
// A file put through the service is a root: the manifest block (canonical
// CBOR, blocks.Manifest) whose CID names the file, and the sealed chunks it
// lists. The service pins the root and its chunks under "file:<root>"; a
// replica pins them under "replica:file:<root>" (blocks/exchange's
// Replicate). A put at factor N is acknowledged only when N distinct nodes
// (this one included) hold every block durably and pinned.
//
// Placement: the other N-1 nodes are chosen among the verified, connected
// members of the domain by rendezvous hashing of (root, peer ID), so the
// same file lands on the same nodes from any writer, and a failed candidate
// is replaced by the next one. See docs/replication.md.
//
// A Service is safe for concurrent use. Serve runs the periodic scrub.
package replica

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/paths"
)

// Exchanger is what the service needs of blocks/exchange; *exchange.Exchange
// implements it.
type Exchanger interface {
	Fetch(ctx context.Context, cids []cid.Cid, where exchange.Where, fn func(blocks.Block) error) error
	Provide(ctx context.Context, root cid.Cid) error
	Replicate(ctx context.Context, p peer.ID, pin string, root cid.Cid, cids []cid.Cid) error
}

// Member is a node of the domain that may hold replicas.
type Member struct {
	ID   peer.ID
	Path paths.Path
}

// Errors callers branch on.
var (
	// ErrReplication: fewer nodes than the replication factor acknowledged
	// the blocks. The blocks are stored and pinned locally.
	ErrReplication = errors.New("replication factor not reached")
	// ErrBadRoot: a root that is not a manifest.
	ErrBadRoot = errors.New("not a file root")
)

// Pin name prefixes.
const (
	FilePinPrefix    = "file:"
	ReplicaPinPrefix = "replica:"
)

// Config configures a Service.
type Config struct {
	// Policy gives the replication factor of a path.
	Policy Policy
	// ScrubInterval is the time between scrubs; 0 means
	// DefaultScrubInterval, negative disables the periodic scrub.
	ScrubInterval time.Duration
	// ReplicateTimeout bounds one node's replication of one file
	// (default 2 minutes).
	ReplicateTimeout time.Duration
	Log              *slog.Logger
}

// DefaultScrubInterval is how often Serve scrubs the store.
const DefaultScrubInterval = 6 * time.Hour

// Service is a node's block service.
type Service struct {
	store   blocks.PinStore
	x       Exchanger
	members func() []Member
	cfg     Config
	log     *slog.Logger

	// scrubMu serialises scrubs (periodic and requested).
	scrubMu sync.Mutex
}

// New returns a service over store and x; members lists the domain's
// nodes this node can reach now (this node excluded).
func New(store blocks.PinStore, x Exchanger, members func() []Member, cfg Config) *Service {
	if cfg.ReplicateTimeout <= 0 {
		cfg.ReplicateTimeout = 2 * time.Minute
	}
	if cfg.ScrubInterval == 0 {
		cfg.ScrubInterval = DefaultScrubInterval
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{store: store, x: x, members: members, cfg: cfg, log: log.With("subsystem", "replica")}
}

// PutOptions tune Put.
type PutOptions struct {
	// Path, if set, selects the replication factor from the policy.
	Path paths.Path
	// Replicas overrides the factor when > 0.
	Replicas int
	// ChunkSize overrides the sealer's default chunk size when > 0.
	ChunkSize int
}

// PutResult describes a stored file.
type PutResult struct {
	Root     cid.Cid
	Key      []byte // the file key: whoever holds it reads the file
	Size     uint64
	Blocks   int          // sealed chunks (the manifest not counted)
	Replicas []paths.Path // the other nodes that acknowledged
}

// Put seals r under a fresh random file key into the local store, pins it,
// and replicates it to reach its factor. The result's Root and Key read it
// back. On ErrReplication the result is still filled in: the file is
// stored and pinned here, and Replicas lists who has it. Safe for
// concurrent use.
func (s *Service) Put(ctx context.Context, r io.Reader, opt PutOptions) (PutResult, error) {
	key := make([]byte, blocks.KeySize)
	if _, err := rand.Read(key); err != nil {
		return PutResult{}, fmt.Errorf("replica: put: %w", err)
	}
	var sopts []blocks.Option
	if opt.ChunkSize > 0 {
		sopts = append(sopts, blocks.WithChunkSize(opt.ChunkSize))
	}
	sealer, err := blocks.NewSealer(key, sopts...)
	if err != nil {
		return PutResult{}, fmt.Errorf("replica: put: %w", err)
	}
	m, err := sealer.Seal(ctx, r, func(b blocks.Block) error { return s.store.Put(ctx, b) })
	if err != nil {
		return PutResult{}, fmt.Errorf("replica: put: %w", err)
	}
	enc, err := m.Encode()
	if err != nil {
		return PutResult{}, fmt.Errorf("replica: put: %w", err)
	}
	root, err := blocks.NewBlock(enc)
	if err != nil {
		return PutResult{}, fmt.Errorf("replica: put: manifest: %w", err)
	}
	if err := s.store.Put(ctx, root); err != nil {
		return PutResult{}, fmt.Errorf("replica: put: %w", err)
	}
	all := append([]cid.Cid{root.CID}, m.Blocks...)
	if err := s.store.Pin(ctx, FilePinPrefix+root.CID.String(), all); err != nil {
		return PutResult{}, fmt.Errorf("replica: put: %w", err)
	}
	res := PutResult{Root: root.CID, Key: key, Size: m.Size, Blocks: len(m.Blocks)}
	factor := opt.Replicas
	if factor <= 0 {
		factor = s.cfg.Policy.Factor(opt.Path)
	}
	if factor > 1 {
		res.Replicas, err = s.replicate(ctx, root.CID, all, factor-1)
		if err != nil {
			return res, err
		}
	}
	// Announce the root so readers find holders when the hosts are gone.
	// A failed announcement does not fail the put: scrub announces again.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := s.x.Provide(pctx, root.CID); err != nil {
		s.log.Debug("provide failed", "root", root.CID, "err", err)
	}
	cancel()
	s.log.Info("file stored", "root", root.CID, "size", m.Size, "blocks", len(m.Blocks), "replicas", len(res.Replicas)+1)
	return res, nil
}

// replicate has need other members hold all under the file's pin, trying
// candidates in rendezvous order, need at a time.
func (s *Service) replicate(ctx context.Context, root cid.Cid, all []cid.Cid, need int) ([]paths.Path, error) {
	cands := Placement(root, s.members())
	var (
		done []paths.Path
		errs []string
	)
	for len(done) < need && len(cands) > 0 {
		batch := cands[:min(need-len(done), len(cands))]
		cands = cands[len(batch):]
		type result struct {
			m   Member
			err error
		}
		results := make(chan result, len(batch))
		for _, m := range batch {
			go func() {
				rctx, cancel := context.WithTimeout(ctx, s.cfg.ReplicateTimeout)
				defer cancel()
				results <- result{m, s.x.Replicate(rctx, m.ID, FilePinPrefix+root.String(), root, all)}
			}()
		}
		for range batch {
			r := <-results
			if r.err != nil {
				s.log.Debug("replication failed", "root", root, "node", r.m.Path, "err", r.err)
				errs = append(errs, fmt.Sprintf("%s: %v", r.m.Path, r.err))
				continue
			}
			done = append(done, r.m.Path)
		}
		if ctx.Err() != nil {
			break
		}
	}
	slices.SortFunc(done, func(a, b paths.Path) int { return cmp.Compare(a.String(), b.String()) })
	if len(done) < need {
		why := "no other node of the domain is connected"
		if len(errs) > 0 {
			why = strings.Join(errs, "; ")
		} else if len(done) > 0 {
			why = "not enough other nodes of the domain are connected"
		}
		return done, fmt.Errorf("replica: %s: %d of %d copies (%s); the file is stored here, run the put again when more nodes are up: %w",
			root, len(done)+1, need+1, why, ErrReplication)
	}
	return done, nil
}

// Placement orders members for root by rendezvous (highest random weight)
// hashing: sha256(root ‖ peer ID), highest first.
func Placement(root cid.Cid, members []Member) []Member {
	type scored struct {
		m Member
		w [32]byte
	}
	ss := make([]scored, 0, len(members))
	seen := make(map[peer.ID]bool)
	for _, m := range members {
		if seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		ss = append(ss, scored{m, sha256.Sum256(append(root.Bytes(), m.ID...))})
	}
	slices.SortFunc(ss, func(a, b scored) int { return -bytes.Compare(a.w[:], b.w[:]) })
	out := make([]Member, len(ss))
	for i, s := range ss {
		out[i] = s.m
	}
	return out
}

// Get writes the plaintext of the file at root to w, fetching missing
// blocks (and the manifest) through the exchange from where, and checking
// every block against its CID and its authentication tag. Fetched blocks
// are cached in the local store (unpinned). Errors wrap blocks.ErrNotFound
// (some block could not be found), blocks.ErrIntegrity (the key does not
// open the file, or a stored block is corrupt), or ErrBadRoot.
func (s *Service) Get(ctx context.Context, root cid.Cid, key []byte, where exchange.Where, w io.Writer) error {
	if len(key) != blocks.KeySize {
		return fmt.Errorf("replica: get %s: file key of %d bytes, want %d", root, len(key), blocks.KeySize)
	}
	where.Root = root
	mdata, err := s.fetchOne(ctx, root, where)
	if err != nil {
		return fmt.Errorf("replica: get %s: manifest: %w", root, err)
	}
	m, err := blocks.DecodeManifest(mdata)
	if err != nil {
		return fmt.Errorf("replica: get %s: %w: %w", root, ErrBadRoot, err)
	}
	if err := s.fetchMissing(ctx, m.Blocks, where); err != nil {
		return fmt.Errorf("replica: get %s: %w", root, err)
	}
	return blocks.Unseal(ctx, m, key, s.store.Get, w)
}

// fetchOne returns c's bytes from the store or the exchange.
func (s *Service) fetchOne(ctx context.Context, c cid.Cid, where exchange.Where) ([]byte, error) {
	data, err := s.store.Get(ctx, c)
	if err == nil {
		return data, nil
	}
	if !errors.Is(err, blocks.ErrNotFound) && !errors.Is(err, blocks.ErrIntegrity) {
		return nil, err
	}
	if errors.Is(err, blocks.ErrIntegrity) {
		s.log.Warn("corrupt local block; fetching it again", "cid", c)
		if err := s.store.Delete(ctx, c); err != nil {
			return nil, err
		}
	}
	var got []byte
	err = s.x.Fetch(ctx, []cid.Cid{c}, where, func(b blocks.Block) error { got = b.Data; return nil })
	if err != nil {
		return nil, err
	}
	return got, nil
}

// fetchMissing brings every CID in cids that the store lacks into it.
func (s *Service) fetchMissing(ctx context.Context, cids []cid.Cid, where exchange.Where) error {
	var missing []cid.Cid
	for _, c := range cids {
		ok, err := s.store.Has(ctx, c)
		if err != nil {
			return err
		}
		if !ok {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return s.x.Fetch(ctx, missing, where, func(blocks.Block) error { return nil })
}

// rootOfPin returns the file root a pin of this service names.
func rootOfPin(name string) (cid.Cid, bool) {
	name = strings.TrimPrefix(name, ReplicaPinPrefix)
	s, ok := strings.CutPrefix(name, FilePinPrefix)
	if !ok {
		return cid.Undef, false
	}
	c, err := cid.Decode(s)
	return c, err == nil
}
