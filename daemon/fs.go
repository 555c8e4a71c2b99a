package daemon

// The file system in the daemon: the service of package fsys/service
// (client, hosted volumes, mounts; docs/fs.md, "Hosting") and the /v1/fs/
// API endpoints over it.

import (
	"context"
	"encoding/base64"
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

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/client"
	"blocktree.dev/bt/fsys/host"
	"blocktree.dev/bt/fsys/remote"
	fssvc "blocktree.dev/bt/fsys/service"
	"blocktree.dev/bt/fuse"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/repo"
)

// fsReadChunk is the size of one read or write of the API.
const fsReadChunk = 1 << 20

// fsService is the file system service (fsys/service) and what the
// /v1/fs/ endpoints need beside it.
type fsService struct {
	*fssvc.Service
	client *client.Client
	node   *p2p.Node
	r      *repo.Repo
	nodeW  *caps.Writecap
	verify *caps.Verifier
	log    *slog.Logger
	api    *server
}

type hostedEntry = fssvc.HostedEntry

// startFS builds the file system service.
func startFS(ctx context.Context, r *repo.Repo, node *p2p.Node, id *p2p.Identity, store blocks.PinStore, xch *exchange.Exchange,
	verifier *caps.Verifier, srv *server, log *slog.Logger) (*fsService, error) {
	svc, err := fssvc.New(ctx, fssvc.Config{Repo: r, Node: node, Identity: id, Store: store, Exchange: xch, Verifier: verifier,
		Decapsulate: decapsulate(r), Log: log})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	return &fsService{Service: svc, client: svc.Client(), node: node, r: r, nodeW: svc.NodeWritecap(), verify: verifier,
		log: log.With("subsystem", "fs"), api: srv}, nil
}

func (f *fsService) loadHosted() (fssvc.HostedList, error) { return f.LoadHosted() }
func (f *fsService) saveHosted(l fssvc.HostedList) error   { return f.SaveHosted(l) }
func (f *fsService) volumeDir(vol paths.Path) string       { return f.VolumeDir(vol) }
func (f *fsService) hostVolume(ctx context.Context, e hostedEntry) (*host.Host, error) {
	return f.HostVolume(ctx, e)
}

// ---- API ----

// routes serves /v1/fs/ and hands everything else to next.
func (f *fsService) routes(next http.Handler) http.Handler {
	s := f.api
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/fs/ls", s.handle(f.ls))
	mux.HandleFunc("GET /v1/fs/log", s.handle(f.logOf))
	mux.HandleFunc("POST /v1/fs/mkdir", s.handle(f.mkdir))
	mux.HandleFunc("POST /v1/fs/rm", s.handle(f.rm))
	mux.HandleFunc("POST /v1/fs/mv", s.handle(f.mv))
	mux.HandleFunc("POST /v1/fs/write", f.write)
	mux.HandleFunc("POST /v1/fs/read", f.read)
	mux.HandleFunc("POST /v1/fs/grant", s.handle(f.grant))
	mux.HandleFunc("POST /v1/fs/revoke", s.handle(f.revoke))
	mux.HandleFunc("POST /v1/fs/host", s.handle(f.hostPath))
	mux.HandleFunc("GET /v1/fs/hosted", s.handle(f.hosted))
	mux.HandleFunc("POST /v1/fs/mount", s.handle(f.mount))
	mux.HandleFunc("POST /v1/fs/unmount", s.handle(f.unmount))
	mux.HandleFunc("GET /v1/fs/mounts", s.handle(f.mountList))
	mux.Handle("/", next)
	return mux
}

// fsErr turns a file-system error into an API error of the right kind.
func fsErr(err error) error {
	var ae *api.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, fsys.ErrNotExist):
		return api.Errorf(api.KindNotFound, "%v", err)
	case errors.Is(err, fsys.ErrExist):
		return api.Errorf(api.KindExists, "%v", err)
	case errors.Is(err, fsys.ErrPermission):
		return api.Errorf(api.KindDenied, "%v (a read needs a readcap and a write a writecap that covers the path: ask its owner for `bt grant`)", err)
	case errors.Is(err, fsys.ErrIntegrity):
		return api.Errorf(api.KindDenied, "%v", err)
	case errors.Is(err, fsys.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(api.KindUnreachable, "%v (is the volume's host running and reachable? `bt peers` shows what this node sees)", err)
	case errors.Is(err, fsys.ErrConflict):
		return api.Errorf(api.KindUnavailable, "%v: other writers kept changing it; retry", err)
	case errors.Is(err, fsys.ErrNoSpace):
		return api.Errorf(api.KindUnavailable, "%v", err)
	case errors.Is(err, fsys.ErrNotDir), errors.Is(err, fsys.ErrIsDir), errors.Is(err, fsys.ErrNotEmpty),
		errors.Is(err, fsys.ErrInvalid), errors.Is(err, fsys.ErrNameTooLong), errors.Is(err, fsys.ErrCrossVolume),
		errors.Is(err, fsys.ErrNotSupported):
		return api.Errorf(api.KindInvalid, "%v", err)
	}
	return err
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
	return api.FSEntry{Path: p.String(), Name: p.Base(), Kind: kindName(a.Kind), Mode: a.Mode, Size: a.Size, Mtime: a.Mtime,
		Owner: string(a.Owner), Version: a.Version, Ino: uint64(a.Ino)}
}

// parent walks to p's parent directory.
func (f *fsService) parent(ctx context.Context, p paths.Path) (fsys.Attr, string, error) {
	par, ok := p.Parent()
	if !ok {
		return fsys.Attr{}, "", api.Errorf(api.KindInvalid, "%s is a domain root: it has no parent", p)
	}
	a, err := f.client.Walk(ctx, par)
	if err != nil {
		return a, "", fsErr(err)
	}
	if a.Kind != fsys.KindDir {
		return a, "", api.Errorf(api.KindInvalid, "%s: %v", par, fsys.ErrNotDir)
	}
	return a, p.Base(), nil
}

func atParam(r *http.Request) (uint64, error) {
	v := r.URL.Query().Get("at")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		return 0, api.Errorf(api.KindInvalid, "at %q: want a version number ≥ 1 (see `bt log`)", v)
	}
	return n, nil
}

func (f *fsService) ls(ctx context.Context, r *http.Request) (any, error) {
	p, err := parsePath(r.URL.Query().Get("path"))
	if err != nil {
		return nil, err
	}
	at, err := atParam(r)
	if err != nil {
		return nil, err
	}
	out := api.FSListing{At: at, Entries: []api.FSEntry{}}
	var (
		a    fsys.Attr
		ents []fsys.DirEntry
	)
	if at > 0 {
		vfs, ok := any(f.client).(fsys.Versioned)
		if !ok {
			return nil, api.Errorf(api.KindInvalid, "this daemon's file system does not keep versions")
		}
		if a, err = vfs.GetattrAt(ctx, p, at); err != nil {
			return nil, fsErr(err)
		}
		if a.Kind == fsys.KindDir {
			if ents, err = vfs.ReaddirAt(ctx, p, at); err != nil {
				return nil, fsErr(err)
			}
		}
	} else {
		if a, err = f.client.Walk(ctx, p); err != nil {
			return nil, fsErr(err)
		}
		if a.Kind == fsys.KindDir {
			if ents, err = f.client.Readdir(ctx, a.Ino); err != nil {
				return nil, fsErr(err)
			}
		}
	}
	out.Entry = entryOf(p, a)
	slices.SortFunc(ents, func(x, y fsys.DirEntry) int {
		switch {
		case x.Name < y.Name:
			return -1
		case x.Name > y.Name:
			return 1
		}
		return 0
	})
	for _, e := range ents {
		cp, err := p.Join(e.Name)
		if err != nil {
			continue
		}
		ce := api.FSEntry{Path: cp.String(), Name: e.Name, Kind: kindName(e.Kind), Ino: uint64(e.Ino)}
		var ca fsys.Attr
		if at > 0 {
			ca, err = any(f.client).(fsys.Versioned).GetattrAt(ctx, cp, at)
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

func (f *fsService) logOf(ctx context.Context, r *http.Request) (any, error) {
	p, err := parsePath(r.URL.Query().Get("path"))
	if err != nil {
		return nil, err
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > remote.MaxLog {
			return nil, api.Errorf(api.KindInvalid, "limit %q: want 1..%d", v, remote.MaxLog)
		}
	}
	vfs, ok := any(f.client).(fsys.Versioned)
	if !ok {
		return nil, api.Errorf(api.KindInvalid, "this daemon's file system does not keep versions")
	}
	es, err := vfs.Log(ctx, p, limit)
	if err != nil {
		return nil, fsErr(err)
	}
	out := make([]api.FSLogEntry, 0, len(es))
	for _, e := range es {
		out = append(out, api.FSLogEntry{Version: e.Version, Time: e.Time, Writer: e.Writer.String(), Op: e.Op})
	}
	return out, nil
}

func (f *fsService) mkdir(ctx context.Context, r *http.Request) (any, error) {
	var req api.FSMkdirRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	p, err := parsePath(req.Path)
	if err != nil {
		return nil, err
	}
	mode := req.Mode
	if mode == 0 {
		mode = 0o755
	}
	a, err := f.mkdirAll(ctx, p, mode, req.Parents)
	if err != nil {
		return nil, err
	}
	return entryOf(p, a), nil
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
		if !parents && api.KindOf(err) == api.KindNotFound {
			return fsys.Attr{}, api.Errorf(api.KindNotFound, "%s: the parent directory does not exist (use -p to make it)", p)
		}
		return fsys.Attr{}, err
	}
	a, err := f.client.Mkdir(ctx, dir.Ino, name, mode)
	if errors.Is(err, fsys.ErrExist) && parents {
		return f.client.Walk(ctx, p)
	}
	return a, fsErr(err)
}

func (f *fsService) rm(ctx context.Context, r *http.Request) (any, error) {
	var req api.FSRemoveRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	p, err := parsePath(req.Path)
	if err != nil {
		return nil, err
	}
	dir, name, err := f.parent(ctx, p)
	if err != nil {
		return nil, err
	}
	a, err := f.client.Lookup(ctx, dir.Ino, name)
	if err != nil {
		return nil, fsErr(err)
	}
	n, err := f.remove(ctx, dir.Ino, name, a, req.Recursive)
	if err != nil {
		return nil, fsErr(err)
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

func (f *fsService) mv(ctx context.Context, r *http.Request) (any, error) {
	var req api.FSMoveRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	src, err := parsePath(req.Src)
	if err != nil {
		return nil, err
	}
	dst, err := parsePath(req.Dst)
	if err != nil {
		return nil, err
	}
	// Into an existing directory, as mv(1) does.
	if a, err := f.client.Walk(ctx, dst); err == nil && a.Kind == fsys.KindDir {
		if dst, err = dst.Join(src.Base()); err != nil {
			return nil, api.Errorf(api.KindInvalid, "%v", err)
		}
	}
	sd, sn, err := f.parent(ctx, src)
	if err != nil {
		return nil, err
	}
	dd, dn, err := f.parent(ctx, dst)
	if err != nil {
		return nil, err
	}
	if err := f.client.Rename(ctx, sd.Ino, sn, dd.Ino, dn, 0); err != nil {
		return nil, fsErr(err)
	}
	a, err := f.client.Walk(ctx, dst)
	if err != nil {
		return nil, fsErr(err)
	}
	return entryOf(dst, a), nil
}

// failStream reports err on a raw request.
func (f *fsService) failStream(w http.ResponseWriter, err error) {
	err = fsErr(err)
	ae := apiError(err)
	f.log.Debug("fs request failed", "kind", ae.Kind, "err", ae.Message)
	writeErr(w, ae)
}

// write is POST /v1/fs/write?path=P: the body replaces the file's content.
func (f *fsService) write(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	p, err := parsePath(q.Get("path"))
	if err != nil {
		f.failStream(w, err)
		return
	}
	mode := uint32(0o644)
	if v := q.Get("mode"); v != "" {
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m > 0o7777 {
			f.failStream(w, api.Errorf(api.KindInvalid, "mode %q: want octal permission bits such as 644", v))
			return
		}
		mode = uint32(m)
	}
	if q.Get("parents") == "1" {
		if par, ok := p.Parent(); ok {
			if _, err := f.mkdirAll(ctx, par, 0o755, true); err != nil {
				f.failStream(w, err)
				return
			}
		}
	}
	dir, name, err := f.parent(ctx, p)
	if err != nil {
		f.failStream(w, err)
		return
	}
	a, err := f.client.Create(ctx, dir.Ino, name, mode, false)
	if err != nil {
		f.failStream(w, err)
		return
	}
	if a.Kind != fsys.KindFile {
		f.failStream(w, fmt.Errorf("%s: %w", p, fsys.ErrIsDir))
		return
	}
	if a.Size != 0 {
		zero := uint64(0)
		if _, err := f.client.Setattr(ctx, a.Ino, fsys.SetAttr{Size: &zero}); err != nil {
			f.failStream(w, err)
			return
		}
	}
	buf := make([]byte, fsReadChunk)
	var off int64
	for {
		n, rerr := io.ReadFull(r.Body, buf)
		if n > 0 {
			if _, err := f.client.WriteAt(ctx, a.Ino, buf[:n], off); err != nil {
				f.failStream(w, err)
				return
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			f.failStream(w, api.Errorf(api.KindInvalid, "reading the upload: %v", rerr))
			return
		}
	}
	if err := f.client.Fsync(ctx, a.Ino); err != nil {
		f.failStream(w, err)
		return
	}
	if a, err = f.client.Getattr(ctx, a.Ino); err != nil {
		f.failStream(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(entryOf(p, a))
}

// read is POST /v1/fs/read: the answer is the file's bytes.
func (f *fsService) read(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	ctx := r.Context()
	var req api.FSReadRequest
	if err := decode(r, &req); err != nil {
		f.failStream(w, err)
		return
	}
	p, err := parsePath(req.Path)
	if err != nil {
		f.failStream(w, err)
		return
	}
	a, err := f.client.Walk(ctx, p)
	if err != nil {
		f.failStream(w, err)
		return
	}
	if a.Kind == fsys.KindDir {
		f.failStream(w, fmt.Errorf("%s: %w (use -r to get a tree)", p, fsys.ErrIsDir))
		return
	}
	buf := make([]byte, fsReadChunk)
	n, err := f.client.ReadAt(ctx, a.Ino, buf, 0)
	if err != nil {
		f.failStream(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Trailer", api.TrailerError)
	w.Header().Set("Bt-Size", strconv.FormatUint(a.Size, 10))
	off := int64(0)
	for {
		if _, werr := w.Write(buf[:n]); werr != nil {
			return
		}
		off += int64(n)
		if n < len(buf) {
			return
		}
		if n, err = f.client.ReadAt(ctx, a.Ino, buf, off); err != nil {
			e := fsErr(err)
			var ae *api.Error
			if !errors.As(e, &ae) {
				ae = api.Errorf(api.KindInternal, "%v", e)
			}
			b, _ := json.Marshal(ae)
			w.Header().Set(api.TrailerError, string(b))
			return
		}
		if n == 0 {
			return
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
		return "", p2pErr(err)
	}
	_, node, err := f.node.VerifiedPeer(ctx, pid)
	if err != nil {
		return "", p2pErr(err)
	}
	return node, nil
}

func (f *fsService) grant(ctx context.Context, r *http.Request) (any, error) {
	var req api.FSGrantRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	p, err := parsePath(req.Path)
	if err != nil {
		return nil, err
	}
	right, err := parseRight(req.Right)
	if err != nil {
		return nil, err
	}
	who, err := f.principalOf(ctx, req.Principal)
	if err != nil {
		return nil, err
	}
	issued, err := f.client.Grant(ctx, p, who, right, req.Expires)
	if err != nil {
		return nil, fsErr(err)
	}
	res := api.FSGrantResult{Path: p.String(), Principal: string(who), Right: req.Right}
	if issued != nil {
		res.Writecap = base64.RawURLEncoding.EncodeToString(issued.Marshal())
	}
	return res, nil
}

func (f *fsService) revoke(ctx context.Context, r *http.Request) (any, error) {
	var req api.FSRevokeRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	p, err := parsePath(req.Path)
	if err != nil {
		return nil, err
	}
	right, err := parseRight(req.Right)
	if err != nil {
		return nil, err
	}
	who, err := f.principalOf(ctx, req.Principal)
	if err != nil {
		return nil, err
	}
	if err := f.client.Revoke(ctx, p, who, right); err != nil {
		return nil, fsErr(err)
	}
	return api.FSGrantResult{Path: p.String(), Principal: string(who), Right: req.Right}, nil
}

func (f *fsService) hostPath(ctx context.Context, r *http.Request) (any, error) {
	var req api.FSHostRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	p, err := parsePath(req.Path)
	if err != nil {
		return nil, err
	}
	e := hostedEntry{Path: p}
	if req.Writecap != "" {
		if e.Writecap, err = base64.RawURLEncoding.DecodeString(req.Writecap); err != nil {
			return nil, api.Errorf(api.KindInvalid, "writecap: %v", err)
		}
		if _, err := caps.Decode(e.Writecap); err != nil {
			return nil, api.Errorf(api.KindInvalid, "writecap: %v", err)
		}
	}
	w := f.nodeW
	if e.Writecap != nil {
		w, _ = caps.Decode(e.Writecap)
	}
	if err := f.verify.VerifyHolder(w, f.r.Config.NodeID, p); err != nil {
		return nil, api.Errorf(api.KindDenied, "this node may not host %s: %v (its writecap covers %s; on the node holding the root key, `bt host %s` issues one)", p, err, f.nodeW.Prefix(), p)
	}
	l, err := f.loadHosted()
	if err != nil {
		return nil, err
	}
	h, err := f.hostVolume(ctx, e)
	if err != nil {
		return nil, fsErr(err)
	}
	if !slices.ContainsFunc(l.Volumes, func(x hostedEntry) bool { return x.Path == p }) {
		l.Volumes = append(l.Volumes, e)
		if err := f.saveHosted(l); err != nil {
			return nil, err
		}
	}
	vi, err := h.Info(ctx)
	if err != nil {
		return nil, fsErr(err)
	}
	return api.FSVolume{Path: p.String(), Dir: f.volumeDir(p), Root: uint64(vi.Root), Version: vi.Version}, nil
}

func (f *fsService) hosted(ctx context.Context, r *http.Request) (any, error) {
	out := []api.FSVolume{}
	hs := f.Hosts()
	for p, h := range hs {
		vi, err := h.Info(ctx)
		if err != nil {
			continue
		}
		out = append(out, api.FSVolume{Path: p.String(), Dir: f.volumeDir(p), Root: uint64(vi.Root), Version: vi.Version})
	}
	slices.SortFunc(out, func(a, b api.FSVolume) int {
		if a.Path < b.Path {
			return -1
		}
		if a.Path > b.Path {
			return 1
		}
		return 0
	})
	return out, nil
}

func (f *fsService) mount(ctx context.Context, r *http.Request) (any, error) {
	var req api.FSMountRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(req.Dir) {
		return nil, api.Errorf(api.KindInvalid, "mount point %q: want an absolute directory", req.Dir)
	}
	dir := filepath.Clean(req.Dir)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, api.Errorf(api.KindInvalid, "mount point %s: not a directory (create it first)", dir)
	}
	if err := f.Mount(dir); errors.Is(err, fssvc.ErrMounted) {
		return nil, api.Errorf(api.KindExists, "%s is mounted already: `bt unmount %s` first", dir, dir)
	} else if err != nil {
		return nil, api.Errorf(api.KindUnavailable, "%v (is /dev/fuse present and fusermount3 installed?)", err)
	}
	return api.FSMount{Dir: dir, Root: string(f.r.Config.Root)}, nil
}

func (f *fsService) unmount(ctx context.Context, r *http.Request) (any, error) {
	var req api.FSMountRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	dir := filepath.Clean(req.Dir)
	err := f.Unmount(dir)
	if errors.Is(err, fssvc.ErrNotMounted) {
		// Perhaps left by a daemon that died.
		if err := fuse.Unmount(dir); err != nil {
			return nil, api.Errorf(api.KindNotFound, "%s is not mounted by this daemon: %v", dir, err)
		}
		return api.FSMount{Dir: dir, Root: string(f.r.Config.Root)}, nil
	}
	if err != nil {
		return nil, api.Errorf(api.KindUnavailable, "unmount %s: %v (is a process using it?)", dir, err)
	}
	return api.FSMount{Dir: dir, Root: string(f.r.Config.Root)}, nil
}

func (f *fsService) mountList(ctx context.Context, r *http.Request) (any, error) {
	out := []api.FSMount{}
	for _, d := range f.Mounts() {
		out = append(out, api.FSMount{Dir: d, Root: string(f.r.Config.Root)})
	}
	return out, nil
}
