package daemon

// The file system in the daemon (docs/fs.md, "Hosting"): the fsys.Client
// every API call and mount uses, the volumes this node hosts (fsys/host)
// and serves to peers (fsys/remote), the default readcaps for domain
// members, the mounts, and the /v1/fs/ API endpoints.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/api/serve"
	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
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
	// fsReadChunk is the size of one read or write of the API.
	fsReadChunk = 1 << 20
)

type hostedList struct {
	Version int           `json:"version"`
	Volumes []hostedEntry `json:"volumes"`
}

type hostedEntry struct {
	Path     paths.Path `json:"path"`
	Writecap []byte     `json:"writecap,omitempty"` // when the node's own does not cover Path
}

// fsService is the daemon's file system.
type fsService struct {
	r       *repo.Repo
	node    *p2p.Node
	id      *p2p.Identity
	store   blocks.PinStore
	xch     *exchange.Exchange
	log     *slog.Logger
	nodeW   *caps.Writecap
	verify  *caps.Verifier
	client  *fsys.Client
	server  *remote.Server
	loc     *remote.Locator
	ctx     context.Context // the service's life
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	api     *server
	closeMu sync.Once

	// mu guards hosts, mounts, rootHost and granted.
	mu       sync.Mutex
	hosts    map[paths.Path]*host.Host
	mounts   map[string]*fuse.Mounted
	rootHost paths.Path
	granted  map[paths.ID]bool // members given a readcap on the root volume
}

// startFS builds the file system service and starts hosting.
func startFS(ctx context.Context, r *repo.Repo, node *p2p.Node, id *p2p.Identity, store blocks.PinStore, xch *exchange.Exchange,
	verifier *caps.Verifier, srv *server, log *slog.Logger) (*fsService, error) {
	w, err := r.Writecap()
	if err != nil {
		return nil, err
	}
	f := &fsService{r: r, node: node, id: id, store: store, xch: xch, log: log.With("subsystem", "fs"), nodeW: w,
		verify: verifier, api: srv, hosts: make(map[paths.Path]*host.Host), mounts: make(map[string]*fuse.Mounted),
		rootHost: r.Config.RootHost, granted: make(map[paths.ID]bool)}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.server = remote.NewServer(node, remote.ServerConfig{NodeID: r.Config.NodeID, Verifier: verifier, Log: log})
	f.loc = remote.NewLocator(node, remote.LocatorConfig{Local: f.server.Volume, RootHost: f.rootHostOf, Verifier: verifier, Log: log})
	list, err := f.loadHosted()
	if err != nil {
		f.server.Close()
		return nil, err
	}
	rootVol := r.Config.Node.RootPath()
	if r.Config.RootKey != repo.CustodyNone && !slices.ContainsFunc(list.Volumes, func(e hostedEntry) bool { return e.Path == rootVol }) {
		// The node that holds the root key hosts the root volume by
		// default: it issues itself a hosting writecap with the root key
		// when the key opens without a prompt.
		hw, err := f.issueHostcap(ctx, rootVol)
		if err != nil {
			f.log.Warn("not hosting the domain's root volume: the root key did not open without a passphrase; run `bt host "+rootVol.String()+"` to host it", "err", err)
		} else {
			list.Volumes = append(list.Volumes, hostedEntry{Path: rootVol, Writecap: hw.Marshal()})
			if err := f.saveHosted(list); err != nil {
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
	f.client, err = fsys.NewClient(fsys.Config{
		Node: r.Config.Node, NodeID: r.Config.NodeID, HostKey: id.HostKey, HostCert: id.Cert, Writecap: cw,
		Decapsulate: decapsulate(r), Store: store,
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
		Issued: func(ctx context.Context, w *caps.Writecap) error {
			if slot, ok := ctx.Value(issuedKey{}).(**caps.Writecap); ok {
				*slot = w
			}
			return nil
		},
		Log: log,
	})
	if err != nil {
		f.server.Close()
		return nil, fmt.Errorf("daemon: fs: %w", err)
	}
	f.wg.Go(func() { _ = f.server.Serve(f.ctx) })
	for _, e := range list.Volumes {
		if _, err := f.hostVolume(ctx, e); err != nil {
			f.log.Error("cannot host volume", "volume", e.Path, "err", err)
		}
	}
	if r.Config.RootKey == repo.CustodyNone && f.rootHostOf(r.Config.Root).IsZero() {
		f.wg.Go(f.learnRootHost)
	}
	return f, nil
}

// rootHostOf is the Locator's shortcut for the root volume of root.
func (f *fsService) rootHostOf(root paths.ID) paths.Path {
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
func (f *fsService) learnRootHost() {
	var ids []peer.ID
	for _, s := range f.r.Config.Bootstrap {
		if ai, err := peer.AddrInfoFromString(s); err == nil {
			ids = append(ids, ai.ID)
		}
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
func (f *fsService) issueHostcap(ctx context.Context, vol paths.Path) (*caps.Writecap, error) {
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

func (f *fsService) loadHosted() (hostedList, error) {
	var l hostedList
	data, err := os.ReadFile(filepath.Join(f.r.Dir, FSDir, hostedFile))
	if errors.Is(err, os.ErrNotExist) {
		return hostedList{Version: 1}, nil
	}
	if err != nil {
		return l, fmt.Errorf("daemon: fs: %w", err)
	}
	if err := json.Unmarshal(data, &l); err != nil || l.Version != 1 {
		return l, fmt.Errorf("daemon: fs: %s: version %d or %v: %w", hostedFile, l.Version, err, repo.ErrBadConfig)
	}
	return l, nil
}

func (f *fsService) saveHosted(l hostedList) error {
	if err := os.MkdirAll(filepath.Join(f.r.Dir, FSDir), 0o700); err != nil {
		return fmt.Errorf("daemon: fs: %w", err)
	}
	data, _ := json.MarshalIndent(l, "", "  ")
	return atomicfile.Write(filepath.Join(f.r.Dir, FSDir, hostedFile), append(data, '\n'), 0o600)
}

// volumeDir is a hosted volume's directory in the repo.
func (f *fsService) volumeDir(vol paths.Path) string {
	sum := sha256.Sum256([]byte(vol.String()))
	return filepath.Join(f.r.Dir, FSDir, hex.EncodeToString(sum[:16]))
}

// hostVolume opens (creating and initialising on first use) and serves
// the volume of e.
func (f *fsService) hostVolume(ctx context.Context, e hostedEntry) (*host.Host, error) {
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
	h, err := host.Open(host.Config{Dir: f.volumeDir(e.Path), Volume: e.Path, Node: f.r.Config.Node, Store: f.store,
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
func (f *fsService) grantMembers() {
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
					err = f.client.Grant(ctx, root, nodeID, fsys.RightRead, time.Time{})
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
func (f *fsService) nodeDir(ctx context.Context, p paths.Path, nodeID paths.ID) error {
	if _, err := f.mkdirAll(ctx, p, 0o755, true); err != nil {
		return err
	}
	var issued *caps.Writecap
	return f.client.Grant(context.WithValue(ctx, issuedKey{}, &issued), p, nodeID, fsys.RightWrite, time.Time{})
}

// Close unmounts every mount, stops serving, closes the client and the
// hosted volumes, and waits for the service's goroutines. Idempotent.
func (f *fsService) Close() error {
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
		f.cancel()
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

// issuedKey carries, in a Grant's context, where the writecap it issues
// goes.
type issuedKey struct{}

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

// ---- API ----

// routes serves /v1/fs/ and hands everything else to next.
func (f *fsService) routes(next http.Handler) http.Handler {
	mux := serve.New(f.api.log, apiError)
	serve.Unary(mux, api.RouteFSList, maxBody, f.ls)
	serve.Unary(mux, api.RouteFSLog, maxBody, f.logOf)
	serve.Unary(mux, api.RouteFSMkdir, maxBody, f.mkdir)
	serve.Unary(mux, api.RouteFSRemove, maxBody, f.rm)
	serve.Unary(mux, api.RouteFSMove, maxBody, f.mv)
	serve.Upload(mux, api.RouteFSWrite, f.write)
	serve.Download(mux, api.RouteFSRead, f.read)
	serve.Unary(mux, api.RouteFSGrant, maxBody, f.grant)
	serve.Unary(mux, api.RouteFSRevoke, maxBody, f.revoke)
	serve.Unary(mux, api.RouteFSHost, maxBody, f.hostPath)
	serve.Unary(mux, api.RouteFSHosted, maxBody, f.hosted)
	serve.Unary(mux, api.RouteFSMount, maxBody, f.mount)
	serve.Unary(mux, api.RouteFSUnmount, maxBody, f.unmount)
	serve.Unary(mux, api.RouteFSMounts, maxBody, f.mountList)
	mux.Handle("/", next)
	return mux
}

func kindName(k fsys.Kind) string {
	switch k {
	case fsys.KindDir:
		return "dir"
	case fsys.KindSymlink:
		return "symlink"
	}
	return "file"
}

func entryOf(p paths.Path, a fsys.Attr) api.FSEntry {
	return api.FSEntry{Path: p, Name: p.Base(), Kind: kindName(a.Kind), Mode: a.Mode, Size: a.Size, Mtime: a.Mtime,
		Owner: a.Owner, Version: a.Version, Ino: uint64(a.Ino)}
}

// parent walks to p's parent directory.
func (f *fsService) parent(ctx context.Context, p paths.Path) (fsys.Attr, string, error) {
	par, ok := p.Parent()
	if !ok {
		return fsys.Attr{}, "", api.Errorf(api.KindInvalid, "%s is a domain root: it has no parent", p)
	}
	a, err := f.client.Walk(ctx, par)
	if err != nil {
		return a, "", err
	}
	if a.Kind != fsys.KindDir {
		return a, "", api.Errorf(api.KindInvalid, "%s: %v", par, fsys.ErrNotDir)
	}
	return a, p.Base(), nil
}

func (f *fsService) ls(ctx context.Context, req api.FSListRequest) (api.FSListing, error) {
	var none api.FSListing
	p, at := req.Path, req.At
	if err := need(p); err != nil {
		return none, err
	}
	out := api.FSListing{At: at, Entries: []api.FSEntry{}}
	var (
		a    fsys.Attr
		ents []fsys.DirEntry
		err  error
	)
	vfs, versioned := any(f.client).(fsys.Versioned)
	if at > 0 {
		if !versioned {
			return none, api.Errorf(api.KindInvalid, "this daemon's file system does not keep versions")
		}
		if a, err = vfs.GetattrAt(ctx, p, at); err != nil {
			return none, err
		}
		if a.Kind == fsys.KindDir {
			if ents, err = vfs.ReaddirAt(ctx, p, at); err != nil {
				return none, err
			}
		}
	} else {
		if a, err = f.client.Walk(ctx, p); err != nil {
			return none, err
		}
		if a.Kind == fsys.KindDir {
			if ents, err = f.client.Readdir(ctx, a.Ino); err != nil {
				return none, err
			}
		}
	}
	out.Entry = entryOf(p, a)
	slices.SortFunc(ents, func(x, y fsys.DirEntry) int { return strings.Compare(x.Name, y.Name) })
	for _, e := range ents {
		cp, err := p.Join(e.Name)
		if err != nil {
			continue
		}
		ce := api.FSEntry{Path: cp, Name: e.Name, Kind: kindName(e.Kind), Ino: uint64(e.Ino)}
		var ca fsys.Attr
		if at > 0 {
			ca, err = vfs.GetattrAt(ctx, cp, at)
		} else {
			ca, err = f.client.Getattr(ctx, e.Ino)
		}
		if err == nil {
			ce = entryOf(cp, ca)
		}
		if e.Kind == fsys.KindSymlink && at == 0 {
			ce.Target, _ = f.client.Readlink(ctx, e.Ino)
		}
		out.Entries = append(out.Entries, ce)
	}
	return out, nil
}

func (f *fsService) logOf(ctx context.Context, req api.FSLogRequest) ([]api.FSLogEntry, error) {
	if err := need(req.Path); err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit == 0 {
		limit = 100
	}
	if limit < 1 || limit > remote.MaxLog {
		return nil, api.Errorf(api.KindInvalid, "limit %d: want 1..%d", limit, remote.MaxLog)
	}
	vfs, ok := any(f.client).(fsys.Versioned)
	if !ok {
		return nil, api.Errorf(api.KindInvalid, "this daemon's file system does not keep versions")
	}
	es, err := vfs.Log(ctx, req.Path, limit)
	if err != nil {
		return nil, err
	}
	out := make([]api.FSLogEntry, 0, len(es))
	for _, e := range es {
		out = append(out, api.FSLogEntry{Version: e.Version, Time: e.Time, Writer: e.Writer, Op: e.Op})
	}
	return out, nil
}

func (f *fsService) mkdir(ctx context.Context, req api.FSMkdirRequest) (api.FSEntry, error) {
	if err := need(req.Path); err != nil {
		return api.FSEntry{}, err
	}
	mode := req.Mode
	if mode == 0 {
		mode = 0o755
	}
	a, err := f.mkdirAll(ctx, req.Path, mode, req.Parents)
	if err != nil {
		return api.FSEntry{}, err
	}
	return entryOf(req.Path, a), nil
}

// mkdirAll makes directory p (and, with parents, its missing ancestors;
// then an existing directory is no error).
func (f *fsService) mkdirAll(ctx context.Context, p paths.Path, mode uint32, parents bool) (fsys.Attr, error) {
	if parents {
		if a, err := f.client.Walk(ctx, p); err == nil {
			if a.Kind != fsys.KindDir {
				return a, api.Errorf(api.KindExists, "%s exists and is not a directory", p)
			}
			return a, nil
		}
		if par, ok := p.Parent(); ok {
			if _, err := f.mkdirAll(ctx, par, mode, true); err != nil {
				return fsys.Attr{}, err
			}
		}
	}
	dir, name, err := f.parent(ctx, p)
	if err != nil {
		if !parents && apiError(err).Kind == api.KindNotFound {
			return fsys.Attr{}, api.Errorf(api.KindNotFound, "%s: the parent directory does not exist (use -p to make it)", p)
		}
		return fsys.Attr{}, err
	}
	a, err := f.client.Mkdir(ctx, dir.Ino, name, mode)
	if errors.Is(err, fsys.ErrExist) && parents {
		return f.client.Walk(ctx, p)
	}
	return a, err
}

func (f *fsService) rm(ctx context.Context, req api.FSRemoveRequest) (api.FSRemoveResult, error) {
	var none api.FSRemoveResult
	if err := need(req.Path); err != nil {
		return none, err
	}
	dir, name, err := f.parent(ctx, req.Path)
	if err != nil {
		return none, err
	}
	a, err := f.client.Lookup(ctx, dir.Ino, name)
	if err != nil {
		return none, err
	}
	n, err := f.remove(ctx, dir.Ino, name, a, req.Recursive)
	if err != nil {
		return none, err
	}
	return api.FSRemoveResult{Removed: n}, nil
}

func (f *fsService) remove(ctx context.Context, dir fsys.Ino, name string, a fsys.Attr, recursive bool) (int, error) {
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
			ca, err := f.client.Lookup(ctx, a.Ino, e.Name)
			if err != nil {
				return n, err
			}
			m, err := f.remove(ctx, a.Ino, e.Name, ca, true)
			n += m
			if err != nil {
				return n, err
			}
		}
	}
	if err := f.client.Rmdir(ctx, dir, name); err != nil {
		if errors.Is(err, fsys.ErrNotEmpty) && !recursive {
			return n, fmt.Errorf("%w (use -r to remove it and everything under it)", err)
		}
		return n, err
	}
	return n + 1, nil
}

func (f *fsService) mv(ctx context.Context, req api.FSMoveRequest) (api.FSEntry, error) {
	var none api.FSEntry
	src, dst := req.Src, req.Dst
	if err := need(src); err != nil {
		return none, err
	}
	if err := need(dst); err != nil {
		return none, err
	}
	// Into an existing directory, as mv(1) does.
	if a, err := f.client.Walk(ctx, dst); err == nil && a.Kind == fsys.KindDir {
		if dst, err = dst.Join(src.Base()); err != nil {
			return none, api.Errorf(api.KindInvalid, "%v", err)
		}
	}
	sd, sn, err := f.parent(ctx, src)
	if err != nil {
		return none, err
	}
	dd, dn, err := f.parent(ctx, dst)
	if err != nil {
		return none, err
	}
	if err := f.client.Rename(ctx, sd.Ino, sn, dd.Ino, dn, 0); err != nil {
		return none, err
	}
	a, err := f.client.Walk(ctx, dst)
	if err != nil {
		return none, err
	}
	return entryOf(dst, a), nil
}

// write is POST /v1/fs/write?path=P: the body replaces the file's content.
func (f *fsService) write(ctx context.Context, req api.FSWriteRequest, body io.Reader) (api.FSEntry, error) {
	var none api.FSEntry
	p := req.Path
	if req.Parents {
		if par, ok := p.Parent(); ok {
			if _, err := f.mkdirAll(ctx, par, 0o755, true); err != nil {
				return none, err
			}
		}
	}
	dir, name, err := f.parent(ctx, p)
	if err != nil {
		return none, err
	}
	a, err := f.client.Create(ctx, dir.Ino, name, req.Mode, false)
	if err != nil {
		return none, err
	}
	if a.Kind != fsys.KindFile {
		return none, fmt.Errorf("%s: %w", p, fsys.ErrIsDir)
	}
	if a.Size != 0 {
		zero := uint64(0)
		if _, err := f.client.Setattr(ctx, a.Ino, fsys.SetAttr{Size: &zero}); err != nil {
			return none, err
		}
	}
	buf := make([]byte, fsReadChunk)
	var off int64
	for {
		n, rerr := io.ReadFull(body, buf)
		if n > 0 {
			if _, err := f.client.WriteAt(ctx, a.Ino, buf[:n], off); err != nil {
				return none, err
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return none, api.Errorf(api.KindInvalid, "reading the upload: %v", rerr)
		}
	}
	if err := f.client.Fsync(ctx, a.Ino); err != nil {
		return none, err
	}
	if a, err = f.client.Getattr(ctx, a.Ino); err != nil {
		return none, err
	}
	return entryOf(p, a), nil
}

// read is POST /v1/fs/read: the answer is the file's bytes.
func (f *fsService) read(ctx context.Context, req api.FSReadRequest, out *serve.RawWriter) error {
	p := req.Path
	if err := need(p); err != nil {
		return err
	}
	a, err := f.client.Walk(ctx, p)
	if err != nil {
		return err
	}
	if a.Kind == fsys.KindDir {
		return fmt.Errorf("%s: %w (use -r to get a tree)", p, fsys.ErrIsDir)
	}
	buf := make([]byte, fsReadChunk)
	n, err := f.client.ReadAt(ctx, a.Ino, buf, 0)
	if err != nil {
		return err
	}
	out.Header().Set("Bt-Size", strconv.FormatUint(a.Size, 10))
	off := int64(0)
	for {
		if _, werr := out.Write(buf[:n]); werr != nil {
			return nil // the client went away
		}
		off += int64(n)
		if n < len(buf) {
			return nil
		}
		if n, err = f.client.ReadAt(ctx, a.Ino, buf, off); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

func parseRight(s string) (fsys.Right, error) {
	switch s {
	case "read":
		return fsys.RightRead, nil
	case "write":
		return fsys.RightWrite, nil
	}
	return 0, api.Errorf(api.KindInvalid, "right %q: want read or write", s)
}

// principalOf parses a principal ID, or a node path whose node principal
// this node has verified.
func (f *fsService) principalOf(ctx context.Context, s string) (paths.ID, error) {
	if id, err := paths.ParseID(s); err == nil {
		return id, nil
	}
	p, err := paths.Parse(s)
	if err != nil {
		return "", api.Errorf(api.KindInvalid, "principal %q: want a principal ID or a node path", s)
	}
	pid, err := f.node.Connect(ctx, p)
	if err != nil {
		return "", err
	}
	_, node, err := f.node.VerifiedPeer(ctx, pid)
	if err != nil {
		return "", err
	}
	return node, nil
}

func (f *fsService) grant(ctx context.Context, req api.FSGrantRequest) (api.FSGrantResult, error) {
	var none api.FSGrantResult
	p := req.Path
	if err := need(p); err != nil {
		return none, err
	}
	right, err := parseRight(req.Right)
	if err != nil {
		return none, err
	}
	who, err := f.principalOf(ctx, req.Principal)
	if err != nil {
		return none, err
	}
	var issued *caps.Writecap
	ctx = context.WithValue(ctx, issuedKey{}, &issued)
	if err := f.client.Grant(ctx, p, who, right, req.Expires); err != nil {
		return none, err
	}
	res := api.FSGrantResult{Path: p, Principal: who, Right: req.Right}
	if issued != nil {
		res.Writecap = base64.RawURLEncoding.EncodeToString(issued.Marshal())
	}
	return res, nil
}

func (f *fsService) revoke(ctx context.Context, req api.FSRevokeRequest) (api.FSGrantResult, error) {
	var none api.FSGrantResult
	p := req.Path
	if err := need(p); err != nil {
		return none, err
	}
	right, err := parseRight(req.Right)
	if err != nil {
		return none, err
	}
	who, err := f.principalOf(ctx, req.Principal)
	if err != nil {
		return none, err
	}
	if err := f.client.Revoke(ctx, p, who, right); err != nil {
		return none, err
	}
	return api.FSGrantResult{Path: p, Principal: who, Right: req.Right}, nil
}

func (f *fsService) hostPath(ctx context.Context, req api.FSHostRequest) (api.FSVolume, error) {
	var none api.FSVolume
	p := req.Path
	if err := need(p); err != nil {
		return none, err
	}
	e := hostedEntry{Path: p}
	if req.Writecap != "" {
		var err error
		if e.Writecap, err = base64.RawURLEncoding.DecodeString(req.Writecap); err != nil {
			return none, api.Errorf(api.KindInvalid, "writecap: %v", err)
		}
		if _, err := caps.Decode(e.Writecap); err != nil {
			return none, api.Errorf(api.KindInvalid, "writecap: %v", err)
		}
	}
	w := f.nodeW
	if e.Writecap != nil {
		w, _ = caps.Decode(e.Writecap)
	}
	if err := f.verify.VerifyHolder(w, f.r.Config.NodeID, p); err != nil {
		return none, api.Errorf(api.KindDenied, "this node may not host %s: %v (its writecap covers %s; on the node holding the root key, `bt host %s` issues one)", p, err, f.nodeW.Prefix(), p)
	}
	l, err := f.loadHosted()
	if err != nil {
		return none, err
	}
	h, err := f.hostVolume(ctx, e)
	if err != nil {
		return none, err
	}
	if !slices.ContainsFunc(l.Volumes, func(x hostedEntry) bool { return x.Path == p }) {
		l.Volumes = append(l.Volumes, e)
		if err := f.saveHosted(l); err != nil {
			return none, err
		}
	}
	vi, err := h.Info(ctx)
	if err != nil {
		return none, err
	}
	return api.FSVolume{Path: p, Dir: f.volumeDir(p), Root: uint64(vi.Root), Version: vi.Version}, nil
}

func (f *fsService) hosted(ctx context.Context, _ api.None) ([]api.FSVolume, error) {
	out := []api.FSVolume{}
	f.mu.Lock()
	hs := make(map[paths.Path]*host.Host, len(f.hosts))
	for p, h := range f.hosts {
		hs[p] = h
	}
	f.mu.Unlock()
	for p, h := range hs {
		vi, err := h.Info(ctx)
		if err != nil {
			continue
		}
		out = append(out, api.FSVolume{Path: p, Dir: f.volumeDir(p), Root: uint64(vi.Root), Version: vi.Version})
	}
	slices.SortFunc(out, func(a, b api.FSVolume) int { return strings.Compare(a.Path.String(), b.Path.String()) })
	return out, nil
}

func (f *fsService) mount(ctx context.Context, req api.FSMountRequest) (api.FSMount, error) {
	var none api.FSMount
	if !filepath.IsAbs(req.Dir) {
		return none, api.Errorf(api.KindInvalid, "mount point %q: want an absolute directory", req.Dir)
	}
	dir := filepath.Clean(req.Dir)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return none, api.Errorf(api.KindInvalid, "mount point %s: not a directory (create it first)", dir)
	}
	f.mu.Lock()
	_, busy := f.mounts[dir]
	f.mu.Unlock()
	if busy {
		return none, api.Errorf(api.KindExists, "%s is mounted already: `bt unmount %s` first", dir, dir)
	}
	m, err := fuse.Mount(f.ctx, dir, f.client, fuse.Options{Self: f.r.Config.Root, Log: f.log})
	if err != nil {
		return none, api.Errorf(api.KindUnavailable, "mount %s: %v (is /dev/fuse present and fusermount3 installed?)", dir, err)
	}
	f.mu.Lock()
	f.mounts[dir] = m
	f.mu.Unlock()
	f.log.Info("mounted", "dir", dir)
	return api.FSMount{Dir: dir, Root: f.r.Config.Root}, nil
}

func (f *fsService) unmount(ctx context.Context, req api.FSMountRequest) (api.FSMount, error) {
	var none api.FSMount
	dir := filepath.Clean(req.Dir)
	f.mu.Lock()
	m, ok := f.mounts[dir]
	delete(f.mounts, dir)
	f.mu.Unlock()
	if !ok {
		// Perhaps left by a daemon that died.
		if err := fuse.Unmount(dir); err != nil {
			return none, api.Errorf(api.KindNotFound, "%s is not mounted by this daemon: %v", dir, err)
		}
		return api.FSMount{Dir: dir, Root: f.r.Config.Root}, nil
	}
	if err := m.Unmount(); err != nil {
		return none, api.Errorf(api.KindUnavailable, "unmount %s: %v (is a process using it?)", dir, err)
	}
	return api.FSMount{Dir: dir, Root: f.r.Config.Root}, nil
}

func (f *fsService) mountList(ctx context.Context, _ api.None) ([]api.FSMount, error) {
	out := []api.FSMount{}
	f.mu.Lock()
	for d := range f.mounts {
		out = append(out, api.FSMount{Dir: d, Root: f.r.Config.Root})
	}
	f.mu.Unlock()
	return out, nil
}
