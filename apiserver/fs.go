package apiserver

// The /v1/fs/ endpoints, over the file system service of package
// fsys/service (client, hosted volumes, mounts; docs/fs.md, "Hosting").

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/api/serve"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/client"
	"blocktree.dev/bt/fsys/remote"
	fssvc "blocktree.dev/bt/fsys/service"
	"blocktree.dev/bt/fuse"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/repo"
)

// fsReadChunk is the size of one read or write of the API.
const fsReadChunk = 1 << 20

// fsAPI answers the /v1/fs/ endpoints over the file system service.
type fsAPI struct {
	*fssvc.Service
	client *client.Client
	node   *p2p.Node
	r      *repo.Repo
	nodeW  *caps.Writecap
	verify *caps.Verifier
	api    *server
}

type hostedEntry = fssvc.HostedEntry

// register adds the /v1/fs/ routes to mux.
func (f *fsAPI) register(mux *serve.Mux) {
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
func (f *fsAPI) parent(ctx context.Context, p paths.Path) (fsys.Attr, string, error) {
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

func (f *fsAPI) ls(ctx context.Context, req api.FSListRequest) (api.FSListing, error) {
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

func (f *fsAPI) logOf(ctx context.Context, req api.FSLogRequest) ([]api.FSLogEntry, error) {
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

func (f *fsAPI) mkdir(ctx context.Context, req api.FSMkdirRequest) (api.FSEntry, error) {
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
func (f *fsAPI) mkdirAll(ctx context.Context, p paths.Path, mode uint32, parents bool) (fsys.Attr, error) {
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

func (f *fsAPI) rm(ctx context.Context, req api.FSRemoveRequest) (api.FSRemoveResult, error) {
	var none api.FSRemoveResult
	if err := need(req.Path); err != nil {
		return none, err
	}
	dir, name, err := f.parent(ctx, req.Path)
	if err != nil {
		return none, err
	}
	n, err := f.Remove(ctx, dir.Ino, name, req.Recursive)
	if errors.Is(err, fsys.ErrNotEmpty) && !req.Recursive {
		return none, fmt.Errorf("%w (use -r to remove it and everything under it)", err)
	}
	if err != nil {
		return none, err
	}
	return api.FSRemoveResult{Removed: n}, nil
}

func (f *fsAPI) mv(ctx context.Context, req api.FSMoveRequest) (api.FSEntry, error) {
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
func (f *fsAPI) write(ctx context.Context, req api.FSWriteRequest, body io.Reader) (api.FSEntry, error) {
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
func (f *fsAPI) read(ctx context.Context, req api.FSReadRequest, out *serve.RawWriter) error {
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
func (f *fsAPI) principalOf(ctx context.Context, s string) (paths.ID, error) {
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

func (f *fsAPI) grant(ctx context.Context, req api.FSGrantRequest) (api.FSGrantResult, error) {
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
	res := api.FSGrantResult{Path: p, Principal: who, Right: req.Right}
	issued, err := f.client.Grant(ctx, p, who, right, req.Expires)
	if err != nil && right == fsys.RightWrite && errors.Is(err, fsys.ErrNotExist) {
		// No file there: the writecap alone is the right to write the
		// path (message it, serve it in a queue group).
		issued, err = f.client.IssueWritecap(ctx, p, who, req.Expires)
		res.Note = fmt.Sprintf("no file at %s: issued the writecap only (it lets the grantee message or serve the path; no write point was marked)", p)
	}
	if err != nil {
		return none, err
	}
	if issued != nil {
		res.Writecap = base64.RawURLEncoding.EncodeToString(issued.Marshal())
	}
	return res, nil
}

func (f *fsAPI) revoke(ctx context.Context, req api.FSRevokeRequest) (api.FSGrantResult, error) {
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

func (f *fsAPI) hostPath(ctx context.Context, req api.FSHostRequest) (api.FSVolume, error) {
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
	l, err := f.LoadHosted()
	if err != nil {
		return none, err
	}
	h, err := f.HostVolume(ctx, e)
	if err != nil {
		return none, err
	}
	if !slices.ContainsFunc(l.Volumes, func(x hostedEntry) bool { return x.Path == p }) {
		l.Volumes = append(l.Volumes, e)
		if err := f.SaveHosted(l); err != nil {
			return none, err
		}
	}
	vi, err := h.Info(ctx)
	if err != nil {
		return none, err
	}
	return api.FSVolume{Path: p, Dir: f.VolumeDir(p), Root: uint64(vi.Root), Version: vi.Version}, nil
}

func (f *fsAPI) hosted(ctx context.Context, _ api.None) ([]api.FSVolume, error) {
	out := []api.FSVolume{}
	hs := f.Hosts()
	for p, h := range hs {
		vi, err := h.Info(ctx)
		if err != nil {
			continue
		}
		out = append(out, api.FSVolume{Path: p, Dir: f.VolumeDir(p), Root: uint64(vi.Root), Version: vi.Version})
	}
	slices.SortFunc(out, func(a, b api.FSVolume) int { return strings.Compare(a.Path.String(), b.Path.String()) })
	return out, nil
}

func (f *fsAPI) mount(ctx context.Context, req api.FSMountRequest) (api.FSMount, error) {
	var none api.FSMount
	if !filepath.IsAbs(req.Dir) {
		return none, api.Errorf(api.KindInvalid, "mount point %q: want an absolute directory", req.Dir)
	}
	dir := filepath.Clean(req.Dir)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return none, api.Errorf(api.KindInvalid, "mount point %s: not a directory (create it first)", dir)
	}
	if err := f.Mount(dir); errors.Is(err, fssvc.ErrMounted) {
		return none, api.Errorf(api.KindExists, "%s is mounted already: `bt unmount %s` first", dir, dir)
	} else if err != nil {
		return none, api.Errorf(api.KindUnavailable, "%v (is /dev/fuse present and fusermount3 installed?)", err)
	}
	return api.FSMount{Dir: dir, Root: f.r.Config.Root}, nil
}

func (f *fsAPI) unmount(ctx context.Context, req api.FSMountRequest) (api.FSMount, error) {
	var none api.FSMount
	dir := filepath.Clean(req.Dir)
	err := f.Unmount(dir)
	if errors.Is(err, fssvc.ErrNotMounted) {
		// Perhaps left by a daemon that died.
		if err := fuse.Unmount(dir); err != nil {
			return none, api.Errorf(api.KindNotFound, "%s is not mounted by this daemon: %v", dir, err)
		}
		return api.FSMount{Dir: dir, Root: f.r.Config.Root}, nil
	}
	if err != nil {
		return none, api.Errorf(api.KindUnavailable, "unmount %s: %v (is a process using it?)", dir, err)
	}
	return api.FSMount{Dir: dir, Root: f.r.Config.Root}, nil
}

func (f *fsAPI) mountList(ctx context.Context, _ api.None) ([]api.FSMount, error) {
	out := []api.FSMount{}
	for _, d := range f.Mounts() {
		out = append(out, api.FSMount{Dir: d, Root: f.r.Config.Root})
	}
	return out, nil
}
