package service

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/client"
	"blocktree.dev/bt/fsys/host"
	"blocktree.dev/bt/fsys/remote"
	"blocktree.dev/bt/fuse"
	"blocktree.dev/bt/internal/atomicfile"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/repo"
)

// FSDir is the file system's directory in the repo: hosted.json and one
// directory per hosted volume.
const FSDir = "fs"

// hostedFile lists the hosted volumes (version 1).
const hostedFile = "hosted.json"

// Timings of the file system service.
const (
	// memberScan is the interval at which the root volume's host looks
	// for domain members without a readcap.
	memberScan = 5 * time.Second
	// hostWritecapTTL is the lifetime of a hosting writecap the daemon
	// issues with the root key.
	hostWritecapTTL = repo.DefaultWritecapTTL
)

// HostedList is the file hostedFile: the volumes this node hosts.
type HostedList struct {
	Version int           `json:"version"`
	Volumes []HostedEntry `json:"volumes"`
}

// HostedEntry is one hosted volume.
type HostedEntry struct {
	Path     paths.Path `json:"path"`
	Writecap []byte     `json:"writecap,omitempty"` // when the node's own does not cover Path
}

// Service is a node's file system service (see the package comment).
type Service struct {
	r       *repo.Repo
	node    *p2p.Node
	id      *p2p.Identity
	store   blocks.PinStore
	xch     *exchange.Exchange
	log     *slog.Logger
	nodeW   *caps.Writecap
	verify  *caps.Verifier
	client  *client.Client
	server  *remote.Server
	loc     *remote.Locator
	ctx     context.Context // the service's life; cancelled under mu
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	decap   func(context.Context, *ecdh.PublicKey) ([]byte, error)
	closeMu sync.Once

	// mu guards hosts, mounts, rootHost and granted.
	mu       sync.Mutex
	hosts    map[paths.Path]*host.Host
	mounts   map[string]*fuse.Mounted
	rootHost paths.Path
	granted  map[paths.ID]bool // members given a readcap on the root volume
}

// Config is what a Service is built on.
type Config struct {
	Repo     *repo.Repo
	Node     *p2p.Node
	Identity *p2p.Identity
	Store    blocks.PinStore
	Exchange *exchange.Exchange
	Verifier *caps.Verifier
	// Decapsulate is the node key's ECDH (fsys.Config.Decapsulate).
	Decapsulate func(context.Context, *ecdh.PublicKey) ([]byte, error)
	Log         *slog.Logger
}

// New builds the file system service: the client, the remote volume
// server, and the hosted volumes (hosting the domain's root volume by
// default on the node that holds the root key). It serves peers' requests
// for hosted volumes at once; Serve announces them.
func New(ctx context.Context, cfg Config) (*Service, error) {
	r, node, id, store, xch, verifier, log := cfg.Repo, cfg.Node, cfg.Identity, cfg.Store, cfg.Exchange, cfg.Verifier, cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w, err := r.Writecap()
	if err != nil {
		return nil, err
	}
	f := &Service{r: r, node: node, id: id, store: store, xch: xch, log: log.With("subsystem", "fs"), nodeW: w,
		verify: verifier, decap: cfg.Decapsulate, hosts: make(map[paths.Path]*host.Host), mounts: make(map[string]*fuse.Mounted),
		rootHost: r.Config.RootHost, granted: make(map[paths.ID]bool)}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.server = remote.NewServer(node, remote.ServerConfig{NodeID: r.Config.NodeID, Verifier: verifier, Log: log})
	f.loc = remote.NewLocator(node, remote.LocatorConfig{Local: f.server.Volume, RootHost: f.rootHostOf, Verifier: verifier, Log: log})
	list, err := f.LoadHosted()
	if err != nil {
		f.server.Close()
		return nil, err
	}
	rootVol := r.Config.Node.RootPath()
	if r.Config.RootKey != repo.CustodyNone && !slices.ContainsFunc(list.Volumes, func(e HostedEntry) bool { return e.Path == rootVol }) {
		// The node that holds the root key hosts the root volume by
		// default: it issues itself a hosting writecap with the root key
		// when the key opens without a prompt.
		hw, err := f.issueHostcap(ctx, rootVol)
		if err != nil {
			f.log.Warn("not hosting the domain's root volume: the root key did not open without a passphrase; run `bt host "+rootVol.String()+"` to host it", "err", err)
		} else {
			list.Volumes = append(list.Volumes, HostedEntry{Path: rootVol, Writecap: hw.Marshal()})
			if err := f.SaveHosted(list); err != nil {
				f.server.Close()
				return nil, err
			}
		}
	}
	// The client writes (and issues writecaps) with the widest writecap
	// this node holds: a root volume's hosting writecap covers the whole
	// domain.
	cw := w
	for _, e := range list.Volumes {
		if hw, err := caps.Decode(e.Writecap); err == nil && e.Path == rootVol && verifier.VerifyHolder(hw, r.Config.NodeID, rootVol) == nil {
			cw = hw
		}
	}
	f.client, err = client.New(client.Config{
		Node: r.Config.Node, NodeID: r.Config.NodeID, HostKey: id.HostKey, HostCert: id.Cert, Writecap: cw,
		Decapsulate: f.decap, Store: store,
		Fetch: func(ctx context.Context, cids []cid.Cid, h paths.Path) error {
			where := exchange.Where{}
			if !h.IsZero() && h != node.Path() {
				where.Hosts = []paths.Path{h}
			}
			return xch.Fetch(ctx, cids, where, nil)
		},
		Locate: func(ctx context.Context, p paths.Path) (fsys.Host, paths.Path, error) {
			v, err := f.loc.Locate(ctx, p)
			return v.Host, v.Path, err
		},
		Issuer: &nodeSigner{r: r, pub: id.Cert.Node},
		Log:    log,
	})
	if err != nil {
		f.server.Close()
		return nil, fmt.Errorf("fs: %w", err)
	}
	for _, e := range list.Volumes {
		if _, err := f.HostVolume(ctx, e); err != nil {
			f.log.Error("cannot host volume", "volume", e.Path, "err", err)
		}
	}
	if r.Config.RootKey == repo.CustodyNone && f.rootHostOf(r.Config.Root).IsZero() {
		f.wg.Go(f.learnRootHost)
	}
	return f, nil
}

// rootHostOf is the Locator's shortcut for the root volume of root.
func (f *Service) rootHostOf(root paths.ID) paths.Path {
	if root != f.r.Config.Root {
		return paths.Path{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rootHost
}

// learnRootHost waits for the bootstrap peer (the inviter, which holds the
// root key and so hosts the root volume) to prove its path, and records
// that path in the repo.
func (f *Service) learnRootHost() {
	var ids []peer.ID
	for _, ai := range f.r.Config.BootstrapPeers {
		ids = append(ids, ai.ID)
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for range 300 {
		for _, id := range ids {
			if p, ok := f.node.VerifiedPath(id); ok && p.Root() == f.r.Config.Root {
				f.mu.Lock()
				f.rootHost = p
				f.mu.Unlock()
				if err := f.r.SetRootHost(p); err != nil {
					f.log.Warn("cannot record the root volume's host", "host", p, "err", err)
				} else {
					f.log.Info("root volume host recorded", "host", p)
				}
				return
			}
		}
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// issueHostcap opens the root key without a prompt (TPM, unsealed, or
// $BT_PASSPHRASE) and issues this node's key a writecap for vol.
func (f *Service) issueHostcap(ctx context.Context, vol paths.Path) (*caps.Writecap, error) {
	k, err := f.r.RootKey(ctx, func() ([]byte, error) {
		if p := os.Getenv("BT_PASSPHRASE"); p != "" {
			return []byte(p), nil
		}
		return nil, errors.New("the root key is sealed and BT_PASSPHRASE is not set")
	})
	if err != nil {
		return nil, err
	}
	defer k.Close()
	now := time.Now()
	return caps.Issue(ctx, k, nil, f.r.Config.NodeID, vol, now.Add(-5*time.Minute), now.Add(hostWritecapTTL))
}

func (f *Service) LoadHosted() (HostedList, error) {
	var l HostedList
	data, err := os.ReadFile(filepath.Join(f.r.Dir, FSDir, hostedFile))
	if errors.Is(err, os.ErrNotExist) {
		return HostedList{Version: 1}, nil
	}
	if err != nil {
		return l, fmt.Errorf("fs: %w", err)
	}
	if err := json.Unmarshal(data, &l); err != nil || l.Version != 1 {
		return l, fmt.Errorf("fs: %s: version %d or %v: %w", hostedFile, l.Version, err, repo.ErrBadConfig)
	}
	return l, nil
}

func (f *Service) SaveHosted(l HostedList) error {
	if err := os.MkdirAll(filepath.Join(f.r.Dir, FSDir), 0o700); err != nil {
		return fmt.Errorf("fs: %w", err)
	}
	data, _ := json.MarshalIndent(l, "", "  ")
	return atomicfile.Write(filepath.Join(f.r.Dir, FSDir, hostedFile), append(data, '\n'), 0o600)
}

// volumeDir is a hosted volume's directory in the repo.
func (f *Service) VolumeDir(vol paths.Path) string {
	sum := sha256.Sum256([]byte(vol.String()))
	return filepath.Join(f.r.Dir, FSDir, hex.EncodeToString(sum[:16]))
}

// hostVolume opens (creating and initialising on first use) and serves
// the volume of e.
func (f *Service) HostVolume(ctx context.Context, e HostedEntry) (*host.Host, error) {
	w := f.nodeW
	if len(e.Writecap) > 0 {
		var err error
		if w, err = caps.Decode(e.Writecap); err != nil {
			return nil, err
		}
	}
	if err := f.verify.VerifyHolder(w, f.r.Config.NodeID, e.Path); err != nil {
		return nil, fmt.Errorf("this node's writecap cannot host %s: %w", e.Path, err)
	}
	f.mu.Lock()
	h, ok := f.hosts[e.Path]
	f.mu.Unlock()
	if ok {
		return h, nil
	}
	h, err := host.Open(host.Config{Dir: f.VolumeDir(e.Path), Volume: e.Path, Node: f.r.Config.Node, Store: f.store,
		Verifier: f.verify, HaveBlocks: remote.HaveBlocks(func(ctx context.Context, cids []cid.Cid, from []peer.ID) error {
			return f.xch.Fetch(ctx, cids, exchange.Where{Peers: from}, nil)
		}), Log: f.log})
	if err != nil {
		return nil, err
	}
	if w != f.nodeW {
		f.client.AddWritecap(w)
	}
	vi, err := h.Info(ctx)
	if err == nil {
		var recs []fsys.Record
		if recs, err = h.Get(ctx, 0, fsys.RecordKey{Ino: vi.Root}); err == nil && len(recs) == 0 {
			err = f.client.InitVolume(ctx, h, 0o755)
		}
	}
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("initialising volume %s: %w", e.Path, err)
	}
	if err := f.server.Add(e.Path, h, w); err != nil {
		h.Close()
		return nil, err
	}
	f.mu.Lock()
	f.hosts[e.Path] = h
	f.mu.Unlock()
	if e.Path.Depth() == 0 {
		f.wg.Go(f.grantMembers)
	}
	return h, nil
}

// grantMembers gives every verified node of the domain a readcap on the
// root volume, once (docs/fs.md, "Default read access").
func (f *Service) grantMembers() {
	root := f.r.Config.Node.RootPath()
	t := time.NewTicker(memberScan)
	defer t.Stop()
	for {
		for _, pi := range f.node.Peers() {
			if pi.Path.IsZero() || pi.Path.Root() != f.r.Config.Root {
				continue
			}
			ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
			_, nodeID, err := f.node.VerifiedPeer(ctx, pi.ID)
			if err == nil {
				f.mu.Lock()
				done := f.granted[nodeID]
				f.mu.Unlock()
				if !done {
					_, err = f.client.Grant(ctx, root, nodeID, fsys.RightRead, time.Time{})
					if err == nil {
						if derr := f.nodeDir(ctx, pi.Path, nodeID); derr != nil {
							f.log.Warn("cannot make the member's node directory a write point", "member", pi.Path, "err", derr)
						}
					}
					if err == nil {
						f.mu.Lock()
						f.granted[nodeID] = true
						f.mu.Unlock()
						f.log.Info("granted read on the root volume", "member", pi.Path, "node", nodeID)
					} else {
						f.log.Debug("cannot grant read to a member yet", "member", pi.Path, "err", err)
					}
				}
			}
			cancel()
		}
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// nodeDir makes the member's node directory /<root>/<name> a write point
// for its own writecap: made if missing, then granted write.
func (f *Service) nodeDir(ctx context.Context, p paths.Path, nodeID paths.ID) error {
	if _, err := f.MkdirAll(ctx, p, 0o755); err != nil {
		return err
	}
	_, err := f.client.Grant(ctx, p, nodeID, fsys.RightWrite, time.Time{})
	return err
}

// Serve announces the hosted volumes to peers (remote.Server.Serve) until
// ctx ends or the service closes, and returns what that returns.
func (f *Service) Serve(ctx context.Context) error {
	f.mu.Lock()
	if f.ctx.Err() != nil {
		f.mu.Unlock()
		return nil
	}
	f.wg.Add(1)
	f.mu.Unlock()
	defer f.wg.Done()
	return f.server.Serve(ctx)
}

// Close unmounts every mount, stops serving, closes the client and the
// hosted volumes, and waits for the service's goroutines. Idempotent.
func (f *Service) Close() error {
	f.closeMu.Do(func() {
		f.mu.Lock()
		mounts := f.mounts
		f.mounts = map[string]*fuse.Mounted{}
		f.mu.Unlock()
		for dir, m := range mounts {
			if err := m.Unmount(); err != nil {
				f.log.Warn("unmount", "dir", dir, "err", err)
			}
		}
		f.mu.Lock()
		f.cancel() // under mu: Serve adds itself to wg only before this
		f.mu.Unlock()
		f.server.Close()
		f.wg.Wait()
		if f.client != nil {
			f.client.Close()
		}
		f.mu.Lock()
		for _, h := range f.hosts {
			h.Close()
		}
		f.hosts = map[paths.Path]*host.Host{}
		f.mu.Unlock()
	})
	return nil
}

// Signer is the node key as a caps.Signer, opened for each signature.
func (f *Service) Signer() caps.Signer { return &nodeSigner{r: f.r, pub: f.id.Cert.Node} }

// Client is the file system client every API call, mount and module
// uses.
func (f *Service) Client() *client.Client { return f.client }

// NodeWritecap is the node's own writecap (the repo's).
func (f *Service) NodeWritecap() *caps.Writecap { return f.nodeW }

// Hosts returns the volumes hosted here, by path.
func (f *Service) Hosts() map[paths.Path]*host.Host {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.hosts)
}

// Errors of the mounts.
var (
	ErrMounted    = errors.New("mounted already")
	ErrNotMounted = errors.New("not mounted by this service")
)

// Mount mounts the file system (every domain this node reads, its own as
// Self) on dir, an absolute directory; a dir mounted already is
// ErrMounted. The mount lasts until Unmount or Close.
func (f *Service) Mount(dir string) error {
	f.mu.Lock()
	_, busy := f.mounts[dir]
	f.mu.Unlock()
	if busy {
		return fmt.Errorf("fs: mount %s: %w", dir, ErrMounted)
	}
	m, err := fuse.Mount(f.ctx, dir, f.client, fuse.Options{Self: f.r.Config.Root, Log: f.log})
	if err != nil {
		return fmt.Errorf("fs: mount %s: %w", dir, err)
	}
	f.mu.Lock()
	f.mounts[dir] = m
	f.mu.Unlock()
	f.log.Info("mounted", "dir", dir)
	return nil
}

// Unmount unmounts dir; a dir this service did not mount is
// ErrNotMounted.
func (f *Service) Unmount(dir string) error {
	f.mu.Lock()
	m, ok := f.mounts[dir]
	delete(f.mounts, dir)
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("fs: unmount %s: %w", dir, ErrNotMounted)
	}
	return m.Unmount()
}

// Mounts returns the directories mounted, sorted.
func (f *Service) Mounts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.mounts))
}

// MkdirAll makes directory p and its missing ancestors; an existing
// directory is no error, an existing file is ErrNotDir.
func (f *Service) MkdirAll(ctx context.Context, p paths.Path, mode uint32) (fsys.Attr, error) {
	if a, err := f.client.Walk(ctx, p); err == nil {
		if a.Kind != fsys.KindDir {
			return a, fmt.Errorf("fs: mkdir %s: %w", p, fsys.ErrNotDir)
		}
		return a, nil
	}
	par, ok := p.Parent()
	if !ok {
		return fsys.Attr{}, fmt.Errorf("fs: mkdir %s: a domain root: %w", p, fsys.ErrInvalid)
	}
	dir, err := f.MkdirAll(ctx, par, mode)
	if err != nil {
		return fsys.Attr{}, err
	}
	a, err := f.client.Mkdir(ctx, dir.Ino, p.Base(), mode)
	if errors.Is(err, fsys.ErrExist) {
		return f.client.Walk(ctx, p)
	}
	return a, err
}

// Remove removes entry name of directory dir, and with recursive
// everything under it when it is a directory, and returns how many
// entries it removed (some, when it fails part-way). Without recursive a
// directory that is not empty is fsys.ErrNotEmpty.
func (f *Service) Remove(ctx context.Context, dir fsys.Ino, name string, recursive bool) (int, error) {
	a, err := f.client.Lookup(ctx, dir, name)
	if err != nil {
		return 0, err
	}
	if a.Kind != fsys.KindDir {
		return 1, f.client.Unlink(ctx, dir, name)
	}
	n := 0
	if recursive {
		ents, err := f.client.Readdir(ctx, a.Ino)
		if err != nil {
			return n, err
		}
		for _, e := range ents {
			m, err := f.Remove(ctx, a.Ino, e.Name, true)
			n += m
			if err != nil {
				return n, err
			}
		}
	}
	if err := f.client.Rmdir(ctx, dir, name); err != nil {
		return n, err
	}
	return n + 1, nil
}

// nodeSigner is the node key as a caps.Signer, opened for each signature
// (granting write is rare; a TPM stays off hot paths).
type nodeSigner struct {
	r   *repo.Repo
	pub crypto.PubKey
}

func (s *nodeSigner) PublicKey() crypto.PubKey { return s.pub }

func (s *nodeSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	k, err := s.r.NodeKey(ctx)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	return k.Sign(ctx, msg)
}
