package daemon

// Wasm modules in the daemon (docs/wasm.md, "Orchestration"): the module
// runtime (package wasm) over this node's actors, pub-sub and file
// system, and its control plane, which is the file system itself.
//
// Control plane. Every node watches its deployment directory
// /<root>/<node>/deploy/ (made on start when this node may, else when it
// first can). Every file there is a signed manifest. The watcher keeps one
// deployment per file name and reconciles on every change: fsys.Client
// Notify wakes it for changes made by other nodes, and it re-scans every
// deployRescan anyway (changes made through this node's own client, by
// the API or a mount, are not notified). A new or changed file is read,
// decoded and verified, then started (a changed one restarted); a file
// that disappears stops its instance. A file that does not decode or
// verify is refused: logged, and shown by `bt ps` with the reason. A
// manifest whose Nodes name only other nodes is ignored. A start that
// fails (module missing, does not compile) is retried with back-off.
// Only ErrNotExist of the directory counts as "empty": while the volume's
// host is unreachable nothing is stopped.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/api"
	"blocktree.dev/bt/api/serve"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
	"blocktree.dev/bt/repo"
	"blocktree.dev/bt/wasm"
)

// WasmCacheDir is the compiled-module cache's directory in the repo.
const WasmCacheDir = "wasm-cache"

// DeployDir is the name of a node's deployment directory, under its node
// path.
const DeployDir = "deploy"

// ManifestExt ends the file names `bt run` gives manifests.
const ManifestExt = ".manifest"

// Limits and timings of the control plane.
const (
	// deployRescan is how often the deployment directory is listed even
	// without a notification.
	deployRescan = 2 * time.Second
	// maxManifest bounds a manifest file; a larger one is refused.
	maxManifest = 1 << 20
	// maxDeployments bounds the files of a deployment directory looked
	// at in one scan; the rest are refused.
	maxDeployments = 256
	// maxReadFile bounds one ReadFile of a module (its code or data).
	maxReadFile = 256 << 20
	// scanTimeout bounds one scan, starts included.
	scanTimeout = 2 * time.Minute
	// retryMin and retryMax bound the back-off of a failed start.
	retryMin, retryMax = 2 * time.Second, time.Minute
	// deployMkdirRetry is how often a missing deployment directory is
	// tried again.
	deployMkdirRetry = 10 * time.Second
	// stopTimeout bounds stopping one instance.
	stopTimeout = 10 * time.Second
)

// deployment is what became of one file of the deployment directory.
type deployment struct {
	file     string   // its name in the directory
	version  uint64   // the file's version when last read
	sum      [32]byte // of its content
	sm       *wasm.SignedManifest
	name     string // the manifest's Name ("" when it did not decode)
	started  bool   // handed to the runtime (running, restarting, …)
	unhandle func() // removes the msg endpoint at the actor path; nil when none
	state    string // when not started: refused, ignored, failed, starting
	reason   string
	since    time.Time
	clash    bool      // refused because another file runs its name: checked again every scan
	retryAt  time.Time // failed: when to try again
	backoff  time.Duration
}

// wasmService is the daemon's module runtime and control plane.
type wasmService struct {
	node    paths.Path
	deploy  paths.Path // node/deploy
	rt      *wasm.Runtime
	actors  *actors.Runtime
	msgs    *msg.Router
	fs      *fsService
	verify  *caps.Verifier
	signer  caps.Signer
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	kick    chan struct{} // a scan is wanted (capacity 1)
	closeMu sync.Once

	// scanMu serialises scans (the watcher's and the API's).
	scanMu sync.Mutex

	// mu guards deps (and the fields of each deployment that ps reads)
	// and dirIno and files.
	mu     sync.Mutex
	deps   map[string]*deployment // by file name
	dirIno fsys.Ino               // the deployment directory's inode, 0 until found
	files  map[fsys.Ino]bool      // the inodes of its files at the last scan
}

// startWasm builds the module runtime and starts watching this node's
// deployment directory.
func startWasm(ctx context.Context, r *repo.Repo, id *p2p.Identity, rt *actors.Runtime, router *msg.Router, ps *pubsub.PubSub,
	f *fsService, verifier *caps.Verifier, log *slog.Logger) (*wasmService, error) {
	rlog := log // the runtime names its own subsystem
	log = log.With("subsystem", "wasm")
	deploy, err := r.Config.Node.Join(DeployDir)
	if err != nil {
		return nil, fmt.Errorf("daemon: wasm: %w", err)
	}
	w := &wasmService{node: r.Config.Node, deploy: deploy, actors: rt, msgs: router, fs: f, verify: verifier, signer: &nodeSigner{r: r, pub: id.Cert.Node},
		log: log, kick: make(chan struct{}, 1), deps: make(map[string]*deployment)}
	w.rt, err = wasm.New(ctx, wasm.Config{Actors: rt, Files: fsFiles{f}, PubSub: ps, Node: r.Config.Node,
		CacheDir: filepath.Join(r.Dir, WasmCacheDir), Verifier: verifier, Log: rlog, Clock: time.Now})
	if err != nil {
		return nil, fmt.Errorf("daemon: wasm: %w", err)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	f.client.Notify(w.notified)
	w.wg.Go(w.watch)
	return w, nil
}

// Close stops watching and stops every instance. Idempotent.
func (w *wasmService) Close() error {
	w.closeMu.Do(func() {
		w.cancel()
		w.wg.Wait()
		w.rt.Close()
	})
	return nil
}

// notified is the file system's invalidation callback: a change to the
// deployment directory or to a manifest file wakes the watcher.
func (w *wasmService) notified(inv fsys.Invalidation) {
	w.mu.Lock()
	hit := w.dirIno != 0 && (inv.Ino == w.dirIno || inv.Dir == w.dirIno) || inv.Ino != 0 && w.files[inv.Ino]
	w.mu.Unlock()
	if hit {
		w.wake()
	}
}

func (w *wasmService) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// watch scans the deployment directory at every wake-up and every
// deployRescan until the service closes.
func (w *wasmService) watch() {
	t := time.NewTicker(deployRescan)
	defer t.Stop()
	made, next := false, time.Time{}
	for {
		// Until the directory exists, try to make it every
		// deployMkdirRetry (a joined node's own directory is made by the
		// root volume's host once it is a member).
		if !made && !time.Now().Before(next) {
			made, next = w.makeDeployDir(), time.Now().Add(deployMkdirRetry)
		}
		w.scan()
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
		}
	}
}

// makeDeployDir makes the deployment directory if it is missing and this
// node may; it reports whether the directory exists.
func (w *wasmService) makeDeployDir() bool {
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	if _, err := w.fs.client.Walk(ctx, w.deploy); err == nil {
		return true
	}
	if _, err := w.fs.mkdirAll(ctx, w.deploy, 0o755, true); err != nil {
		w.log.Debug("cannot make the deployment directory yet", "dir", w.deploy, "err", err)
		return false
	}
	w.log.Info("deployment directory made", "dir", w.deploy)
	return true
}

// listed is one file of the deployment directory as a scan sees it.
type listed struct {
	ino     fsys.Ino
	version uint64
	size    uint64
}

// scan lists the deployment directory once and reconciles.
func (w *wasmService) scan() {
	w.scanMu.Lock()
	defer w.scanMu.Unlock()
	ctx, cancel := context.WithTimeout(w.ctx, scanTimeout)
	defer cancel()
	files, err := w.list(ctx)
	if err != nil {
		if w.ctx.Err() == nil {
			w.log.Debug("cannot list the deployment directory", "dir", w.deploy, "err", err)
		}
		return
	}
	w.reconcile(ctx, files)
}

// list returns the files of the deployment directory; a missing
// directory has none.
func (w *wasmService) list(ctx context.Context) (map[string]listed, error) {
	c := w.fs.client
	dir, err := c.Walk(ctx, w.deploy)
	if errors.Is(err, fsys.ErrNotExist) {
		w.mu.Lock()
		w.dirIno = 0
		w.mu.Unlock()
		return map[string]listed{}, nil
	}
	if err != nil {
		return nil, err
	}
	if dir.Kind != fsys.KindDir {
		return map[string]listed{}, nil
	}
	w.mu.Lock()
	w.dirIno = dir.Ino
	w.mu.Unlock()
	ents, err := c.Readdir(ctx, dir.Ino)
	if err != nil {
		return nil, err
	}
	out := make(map[string]listed, len(ents))
	for _, e := range ents {
		if e.Kind != fsys.KindFile || strings.HasPrefix(e.Name, ".") {
			continue // editors' and cp's temporary files are hidden ones
		}
		a, err := c.Getattr(ctx, e.Ino)
		if err != nil {
			return nil, err
		}
		out[e.Name] = listed{ino: e.Ino, version: a.Version, size: a.Size}
	}
	inos := make(map[fsys.Ino]bool, len(out))
	for _, l := range out {
		inos[l.ino] = true
	}
	w.mu.Lock()
	w.files = inos
	w.mu.Unlock()
	return out, nil
}

// reconcile brings the instances in line with files: stop what is gone
// or changed, then start what is new or changed (and retry failed starts
// that are due). Called with scanMu held.
func (w *wasmService) reconcile(ctx context.Context, files map[string]listed) {
	now := time.Now()
	// Gone.
	w.mu.Lock()
	var gone []*deployment
	for name, d := range w.deps {
		if _, ok := files[name]; !ok {
			gone = append(gone, d)
			delete(w.deps, name)
		}
	}
	w.mu.Unlock()
	for _, d := range gone {
		w.stopDep(d, "its manifest was removed")
	}
	// New, changed, or due for a retry; in name order, so a name clash
	// is decided the same way on every scan.
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for i, file := range names {
		l := files[file]
		w.mu.Lock()
		old := w.deps[file]
		w.mu.Unlock()
		if old != nil && old.version == l.version {
			switch {
			case old.state == api.WasmFailed && !now.Before(old.retryAt):
				w.start(ctx, old)
			case old.clash && w.nameFree(old):
				w.mu.Lock()
				old.clash = false
				w.mu.Unlock()
				w.start(ctx, old)
			}
			continue
		}
		if l.size == 0 {
			// Being written: a file is created before its content is
			// committed, and other nodes see it empty in between.
			continue
		}
		d := &deployment{file: file, version: l.version, since: now}
		if i >= maxDeployments {
			w.refuse(d, fmt.Sprintf("over %d files in %s", maxDeployments, w.deploy))
			w.replace(old, d)
			continue
		}
		data, err := w.readManifest(ctx, file, l)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, fsys.ErrUnavailable) {
				return // try again next scan, leaving things as they are
			}
			w.refuse(d, err.Error())
			w.replace(old, d)
			continue
		}
		d.sum = sha256.Sum256(data)
		if old != nil && old.sum == d.sum {
			// Rewritten with the same bytes: nothing to do.
			w.mu.Lock()
			old.version = l.version
			w.mu.Unlock()
			continue
		}
		if err := w.check(d, data); err != nil {
			w.replace(old, d)
			continue
		}
		w.replace(old, d)
		if d.state == "" {
			w.start(ctx, d)
		}
	}
}

// readManifest reads the manifest file at most maxManifest bytes long.
func (w *wasmService) readManifest(ctx context.Context, file string, l listed) ([]byte, error) {
	if l.size > maxManifest {
		return nil, fmt.Errorf("manifest is %d bytes, over the %d-byte limit", l.size, maxManifest)
	}
	buf := make([]byte, l.size+1)
	n, err := readFull(ctx, w.fs.client, l.ino, buf)
	if err != nil {
		return nil, fmt.Errorf("reading the manifest: %w", err)
	}
	if n > maxManifest {
		return nil, fmt.Errorf("manifest is over the %d-byte limit", maxManifest)
	}
	return buf[:n], nil
}

// check decodes and verifies a manifest into d; on refusal or when the
// manifest is for other nodes it sets d's state and returns an error.
func (w *wasmService) check(d *deployment, data []byte) error {
	sm, err := wasm.DecodeManifest(data)
	if err != nil {
		w.refuse(d, fmt.Sprintf("cannot decode the manifest: %v", err))
		return err
	}
	d.sm, d.name = sm, sm.Name
	if len(sm.Nodes) > 0 && !slices.Contains(sm.Nodes, w.node) {
		d.state, d.reason = api.WasmIgnored, fmt.Sprintf("the manifest is for %s, not this node", joinPaths(sm.Nodes))
		w.log.Info("manifest ignored: for other nodes", "file", d.file, "name", d.name, "nodes", joinPaths(sm.Nodes))
		return errors.New(d.reason)
	}
	if err := sm.Verify(w.verify); err != nil {
		w.refuse(d, fmt.Sprintf("the manifest does not verify: %v", err))
		return err
	}
	if sm.Writecap != nil && sm.Writecap.Root() != w.node.Root() {
		err := fmt.Errorf("signed under another domain's root %s, not this domain's %s", sm.Writecap.Root(), w.node.Root())
		w.refuse(d, err.Error())
		return err
	}
	if !w.nameFree(d) {
		err := fmt.Errorf("the name %q is taken by another manifest of %s", d.name, w.deploy)
		d.state, d.reason, d.clash = api.WasmRefused, err.Error(), true
		w.log.Warn("manifest refused", "file", d.file, "name", d.name, "reason", d.reason)
		return err
	}
	return nil
}

// nameFree reports whether no other file's instance runs d's name.
func (w *wasmService) nameFree(d *deployment) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range w.deps {
		if o.file != d.file && o.name == d.name && o.started {
			return false
		}
	}
	return true
}

func (w *wasmService) refuse(d *deployment, reason string) {
	d.state, d.reason = api.WasmRefused, reason
	w.log.Warn("manifest refused", "file", d.file, "name", d.name, "reason", reason)
}

// replace puts d in place of old (nil when new), stopping old's instance.
func (w *wasmService) replace(old, d *deployment) {
	if old != nil && old.started {
		w.stopDep(old, "its manifest changed")
	}
	w.mu.Lock()
	w.deps[d.file] = d
	w.mu.Unlock()
}

// start hands d's manifest to the runtime. A manifest the runtime
// refuses (bad fields, signature or rights; not for this node) stays
// refused; another failure (the name is still held by an instance being
// replaced) is retried with back-off. What happens after the start
// (compiling, crashes, restarts) the runtime reports in its instance.
func (w *wasmService) start(ctx context.Context, d *deployment) {
	w.mu.Lock()
	d.state = api.WasmStarting
	w.mu.Unlock()
	err := w.rt.Start(ctx, d.sm)
	w.mu.Lock()
	defer w.mu.Unlock()
	d.since = time.Now()
	switch {
	case err == nil:
		d.started, d.state, d.reason, d.backoff = true, "", "", 0
		d.unhandle = w.bridge(d.name)
		w.log.Info("module started", "name", d.name, "file", d.file, "module", d.sm.Module)
	case errors.Is(err, wasm.ErrManifest), errors.Is(err, wasm.ErrSignature), errors.Is(err, wasm.ErrRights):
		d.state, d.reason = api.WasmRefused, err.Error()
		w.log.Warn("manifest refused", "file", d.file, "name", d.name, "reason", d.reason)
	case errors.Is(err, wasm.ErrNotThisNode):
		d.state, d.reason = api.WasmIgnored, err.Error()
	default:
		d.backoff = min(max(2*d.backoff, retryMin), retryMax)
		d.state, d.reason, d.retryAt = api.WasmFailed, err.Error(), d.since.Add(d.backoff)
		w.log.Warn("module did not start", "name", d.name, "file", d.file, "retry_in", d.backoff, "err", err)
	}
}

// instanceInto fills e from the runtime's view of the instance.
func instanceInto(e *api.WasmInstance, in wasm.InstanceInfo) {
	e.Path, e.Module, e.State, e.Restarts = in.Path, in.Module, in.State, in.Restarts
	if in.LastError != "" {
		e.Reason = in.LastError
	}
	if !in.Started.IsZero() {
		e.Since = in.Started
	}
}

// stopDep stops d's instance if it was started.
func (w *wasmService) stopDep(d *deployment, why string) {
	w.mu.Lock()
	started, unhandle := d.started, d.unhandle
	d.started, d.unhandle = false, nil
	w.mu.Unlock()
	if unhandle != nil {
		unhandle()
	}
	if !started {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := w.rt.Stop(ctx, d.name); err != nil {
		w.log.Warn("stopping a module", "name", d.name, "err", err)
		return
	}
	w.log.Info("module stopped", "name", d.name, "file", d.file, "why", why)
}

// bridge makes the instance name reachable by messaging (`bt send`,
// `bt call`, msg.Router from any node): an endpoint at its actor path
// that hands each message's payload to the actor, a call's reply back.
// It returns the endpoint's remover, nil when it cannot register one.
func (w *wasmService) bridge(name string) func() {
	p, err := w.node.Join(name)
	if err != nil {
		return nil
	}
	remove, err := w.msgs.Handle(p, func(ctx context.Context, m *msg.Message) ([]byte, error) {
		if m.Size > wasm.MaxMessage {
			return nil, fmt.Errorf("%d-byte message, over the module's %d-byte limit", m.Size, wasm.MaxMessage)
		}
		payload, err := io.ReadAll(io.LimitReader(m.Body, wasm.MaxMessage+1))
		if err != nil {
			return nil, err
		}
		if in, ok := w.rt.Instance(name); !ok || in.State != wasm.StateRunning {
			why := "stopped"
			if ok {
				why = in.State
				if in.LastError != "" {
					why += ": " + in.LastError
				}
			}
			return nil, fmt.Errorf("module %s is not running (%s; `bt ps` and `bt logs %s` on %s say more)", name, why, name, w.node)
		}
		if !m.Call {
			return nil, w.actors.Send(ctx, p, payload)
		}
		reply, err := w.actors.Call(ctx, p, payload)
		if err != nil {
			return nil, err
		}
		switch r := reply.(type) {
		case []byte:
			return r, nil
		case string:
			return []byte(r), nil
		case nil:
			return nil, nil
		}
		return nil, fmt.Errorf("the module answered a %T", reply)
	})
	if err != nil {
		w.log.Warn("module not reachable by messaging", "name", name, "path", p, "err", err)
		return nil
	}
	return remove
}

// rescan scans now and returns when done (for API calls that changed the
// directory).
func (w *wasmService) rescan() { w.scan() }

func joinPaths(ps []paths.Path) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// readFull reads file ino from offset 0 into buf until buf is full or
// the file ends, and returns the bytes read.
func readFull(ctx context.Context, c *fsys.Client, ino fsys.Ino, buf []byte) (int, error) {
	off := 0
	for off < len(buf) {
		n, err := c.ReadAt(ctx, ino, buf[off:], int64(off))
		off += n
		if err != nil {
			return off, err
		}
		if n == 0 {
			break
		}
	}
	return off, nil
}

// ---- the runtime's file access ----

// fsFiles is the runtime's view of the file system: this node's fsys
// client, so a module reads with this node's readcaps and writes with
// its writecaps; the runtime checks the manifest's rights first.
type fsFiles struct{ f *fsService }

// ReadFile returns the content of the file at p, at most maxReadFile
// bytes.
func (a fsFiles) ReadFile(ctx context.Context, p paths.Path) ([]byte, error) {
	c := a.f.client
	at, err := c.Walk(ctx, p)
	if err != nil {
		return nil, err
	}
	if at.Kind == fsys.KindDir {
		return nil, fmt.Errorf("fsys: read %s: %w", p, fsys.ErrIsDir)
	}
	if at.Size > maxReadFile {
		return nil, fmt.Errorf("fsys: read %s: %d bytes, over the %d-byte limit: %w", p, at.Size, maxReadFile, fsys.ErrInvalid)
	}
	var out bytes.Buffer
	buf := make([]byte, min(max(int(at.Size), 4096), fsReadChunk))
	var off int64
	for {
		n, err := c.ReadAt(ctx, at.Ino, buf, off)
		out.Write(buf[:n])
		off += int64(n)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return out.Bytes(), nil
		}
		if off > maxReadFile {
			return nil, fmt.Errorf("fsys: read %s: over the %d-byte limit: %w", p, maxReadFile, fsys.ErrInvalid)
		}
	}
}

// WriteFile replaces the content of the file at p (made if missing; its
// directory must exist) and returns once it is durable.
func (a fsFiles) WriteFile(ctx context.Context, p paths.Path, data []byte) error {
	c := a.f.client
	par, ok := p.Parent()
	if !ok {
		return fmt.Errorf("fsys: write %s: %w", p, fsys.ErrInvalid)
	}
	dir, err := c.Walk(ctx, par)
	if err != nil {
		return err
	}
	at, err := c.Create(ctx, dir.Ino, p.Base(), 0o644, false)
	if err != nil {
		return err
	}
	if at.Kind != fsys.KindFile {
		return fmt.Errorf("fsys: write %s: %w", p, fsys.ErrIsDir)
	}
	if at.Size != 0 {
		zero := uint64(0)
		if _, err := c.Setattr(ctx, at.Ino, fsys.SetAttr{Size: &zero}); err != nil {
			return err
		}
	}
	for off := 0; off < len(data); {
		n, err := c.WriteAt(ctx, at.Ino, data[off:min(len(data), off+fsReadChunk)], int64(off))
		if err != nil {
			return err
		}
		off += n
	}
	return c.Fsync(ctx, at.Ino)
}

// ---- API ----

// routes serves /v1/wasm/ and hands everything else to next.
func (w *wasmService) routes(s *server, next http.Handler) http.Handler {
	mux := serve.New(s.log, apiError)
	serve.Unary(mux, api.RouteWasmRun, maxBody, w.run)
	serve.Unary(mux, api.RouteWasmPs, maxBody, w.ps)
	serve.Unary(mux, api.RouteWasmStop, maxBody, w.stop)
	serve.Stream(mux, api.RouteWasmLogs, w.logs, nil)
	mux.Handle("/", next)
	return mux
}

// restartPolicy parses a restart mode; "" is the runtime's default.
func restartPolicy(s string) (wasm.RestartPolicy, error) {
	switch s {
	case "", wasm.RestartAlways, wasm.RestartOnFailure, wasm.RestartNever:
		return wasm.RestartPolicy{Mode: s}, nil
	}
	return wasm.RestartPolicy{}, api.Errorf(api.KindInvalid, "restart %q: want always, on-failure or never", s)
}

// checkPaths checks that none of the paths of a request is missing.
func checkPaths(what string, ps []paths.Path) error {
	for _, p := range ps {
		if p.IsZero() {
			return api.Errorf(api.KindInvalid, "%s: an empty path", what)
		}
	}
	return nil
}

// manifestOf builds the manifest a WasmRunRequest asks for.
func (w *wasmService) manifestOf(req api.WasmRunRequest) (wasm.Manifest, error) {
	var m wasm.Manifest
	mod := req.Module
	if err := need(mod); err != nil {
		return m, err
	}
	name := req.Name
	if name == "" {
		name = strings.TrimSuffix(mod.Base(), ".wasm")
	}
	if err := paths.ValidComponent(name); err != nil || strings.HasPrefix(name, ".") {
		return m, api.Errorf(api.KindInvalid, "name %q: want a path component not starting with a dot (%v)", name, err)
	}
	m = wasm.Manifest{Name: name, Module: mod, Env: req.Env, MemoryLimit: req.Memory, Nodes: req.Nodes}
	for _, c := range []struct {
		what string
		ps   []paths.Path
	}{{"node", req.Nodes}, {"read", req.Read}, {"write", req.Write}, {"message", req.Message}, {"publish", req.Publish}} {
		if err := checkPaths(c.what, c.ps); err != nil {
			return m, err
		}
	}
	if len(m.Nodes) == 0 {
		m.Nodes = []paths.Path{w.node}
	}
	for _, n := range m.Nodes {
		if n.Depth() != 1 {
			return m, api.Errorf(api.KindInvalid, "node %s: want a node path /<root>/<name>", n)
		}
	}
	var err error
	if req.Deadline != "" {
		if m.Deadline, err = time.ParseDuration(req.Deadline); err != nil || m.Deadline <= 0 {
			return m, api.Errorf(api.KindInvalid, "deadline %q: want a positive duration such as 5s", req.Deadline)
		}
	}
	if m.Restart, err = restartPolicy(req.Restart); err != nil {
		return m, err
	}
	m.Rights.Read, m.Rights.Write, m.Rights.Message, m.Rights.Publish = req.Read, req.Write, req.Message, req.Publish
	return m, nil
}

// sign has the node key sign m with the first writecap this node holds
// (its node writecap, then hosting writecaps such as the root volume's)
// under which m verifies. When none does it still returns the manifest
// signed with the first, and verr says why nodes would refuse it; err is
// a failure to sign at all.
//
// The node key signs, not the host key: a manifest is a long-lived file,
// and one signed by the host key would stop verifying when its host
// certificate expires (30 days). Signing is rare (one per `bt run`), so
// opening the key in custody (a TPM) then is no hot path.
func (w *wasmService) sign(ctx context.Context, m wasm.Manifest) (sm *wasm.SignedManifest, verr, err error) {
	cands := []*caps.Writecap{w.fs.nodeW}
	if l, err := w.fs.loadHosted(); err == nil {
		for _, e := range l.Volumes {
			if hw, err := caps.Decode(e.Writecap); err == nil && w.verify.VerifyHolder(hw, w.fs.r.Config.NodeID, e.Path) == nil {
				cands = append(cands, hw)
			}
		}
	}
	var first *wasm.SignedManifest
	var firstErr error
	for _, wc := range cands {
		sm, err := wasm.Sign(ctx, m, w.signer, wc)
		if err != nil {
			if firstErr == nil && first == nil {
				firstErr = err
			}
			continue
		}
		verr := sm.Verify(w.verify)
		if verr == nil {
			return sm, nil, nil
		}
		if first == nil {
			first, firstErr = sm, verr
		}
	}
	if first == nil {
		return nil, nil, api.Errorf(api.KindDenied, "signing the manifest: %v", firstErr)
	}
	return first, firstErr, nil
}

func (w *wasmService) run(ctx context.Context, req api.WasmRunRequest) (api.WasmRunResult, error) {
	var none api.WasmRunResult
	m, err := w.manifestOf(req)
	if err != nil {
		return none, err
	}
	sm, refused, err := w.sign(ctx, m)
	if err != nil {
		return none, err
	}
	data, err := sm.Marshal()
	if err != nil {
		return none, fmt.Errorf("encoding the manifest: %w", err)
	}
	res := api.WasmRunResult{Name: m.Name, Signer: sm.Signer}
	if req.Print {
		res.Manifest = data
		if refused != nil {
			res.Warning = fmt.Sprintf("a node would refuse this manifest: %v", refused)
		}
		return res, nil
	}
	if refused != nil {
		return none, api.Errorf(api.KindDenied, "this node cannot sign a manifest with these rights: %v (its writecap covers %s)", refused, w.fs.nodeW.Prefix())
	}
	if a, err := w.fs.client.Walk(ctx, m.Module); err != nil {
		return none, fmt.Errorf("module %s: %w", m.Module, err)
	} else if a.Kind != fsys.KindFile {
		return none, api.Errorf(api.KindInvalid, "module %s is not a file", m.Module)
	}
	local := false
	for _, n := range m.Nodes {
		dir, _ := n.Join(DeployDir)
		file, _ := dir.Join(m.Name + ManifestExt)
		if _, err := w.fs.mkdirAll(ctx, dir, 0o755, true); err != nil {
			return none, err
		}
		if err := (fsFiles{w.fs}).WriteFile(ctx, file, data); err != nil {
			return none, fmt.Errorf("writing the manifest %s: %w", file, err)
		}
		res.Manifests = append(res.Manifests, file)
		local = local || n == w.node
	}
	if local {
		w.rescan()
	}
	return res, nil
}

func (w *wasmService) ps(ctx context.Context, _ api.None) ([]api.WasmInstance, error) {
	infos := map[string]wasm.InstanceInfo{}
	for _, in := range w.rt.Instances() {
		infos[in.Name] = in
	}
	out := []api.WasmInstance{}
	seen := map[string]bool{}
	w.mu.Lock()
	for _, d := range w.deps {
		file, _ := w.deploy.Join(d.file)
		e := api.WasmInstance{Name: d.name, File: file, State: d.state, Reason: d.reason, Since: d.since}
		if d.sm != nil {
			e.Module, e.Signer = d.sm.Module, d.sm.Signer
		}
		if in, ok := infos[d.name]; ok && d.started {
			instanceInto(&e, in)
			seen[d.name] = true
		}
		out = append(out, e)
	}
	w.mu.Unlock()
	for name, in := range infos {
		if !seen[name] {
			e := api.WasmInstance{Name: name}
			instanceInto(&e, in)
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b api.WasmInstance) int {
		return strings.Compare(a.Name+"\x00"+a.File.String(), b.Name+"\x00"+b.File.String())
	})
	return out, nil
}

func (w *wasmService) stop(ctx context.Context, req api.WasmStopRequest) (api.WasmStopResult, error) {
	var none api.WasmStopResult
	if req.Name == "" {
		return none, api.Errorf(api.KindInvalid, "stop: want a name (`bt ps` lists them)")
	}
	node := w.node
	if !req.Node.IsZero() {
		node = req.Node
	}
	dir, err := node.Join(DeployDir)
	if err != nil {
		return none, api.Errorf(api.KindInvalid, "%v", err)
	}
	file, err := w.manifestFile(ctx, dir, req.Name)
	if err != nil {
		return none, err
	}
	d, err := w.fs.client.Walk(ctx, dir)
	if err != nil {
		return none, err
	}
	if err := w.fs.client.Unlink(ctx, d.Ino, file.Base()); err != nil {
		return none, err
	}
	res := api.WasmStopResult{Name: req.Name, Removed: file}
	if node == w.node {
		w.rescan()
		res.Stopped = true
	}
	return res, nil
}

// manifestFile finds the manifest of name in dir: the file this node's
// watcher knows it from, else <name>.manifest, else the file whose
// manifest has that name.
func (w *wasmService) manifestFile(ctx context.Context, dir paths.Path, name string) (paths.Path, error) {
	if dir == w.deploy {
		w.mu.Lock()
		var files []string
		for _, d := range w.deps {
			if d.name == name {
				files = append(files, d.file)
			}
		}
		w.mu.Unlock()
		if len(files) > 0 {
			slices.Sort(files)
			p, _ := dir.Join(files[0])
			return p, nil
		}
	}
	if paths.ValidComponent(name+ManifestExt) == nil {
		p, _ := dir.Join(name + ManifestExt)
		if _, err := w.fs.client.Walk(ctx, p); err == nil {
			return p, nil
		}
	}
	c := w.fs.client
	da, err := c.Walk(ctx, dir)
	if err != nil {
		return paths.Path{}, err
	}
	ents, err := c.Readdir(ctx, da.Ino)
	if err != nil {
		return paths.Path{}, err
	}
	for _, e := range ents {
		if e.Kind != fsys.KindFile || strings.HasPrefix(e.Name, ".") {
			continue
		}
		p, _ := dir.Join(e.Name)
		a, err := c.Getattr(ctx, e.Ino)
		if err != nil || a.Size > maxManifest {
			continue
		}
		data, err := (fsFiles{w.fs}).ReadFile(ctx, p)
		if err != nil {
			continue
		}
		if sm, err := wasm.DecodeManifest(data); err == nil && sm.Name == name {
			return p, nil
		}
	}
	return paths.Path{}, api.Errorf(api.KindNotFound, "no manifest named %q in %s", name, dir)
}

// logs is POST /v1/wasm/logs: a stream of WasmLogLine.
func (w *wasmService) logs(ctx context.Context, req api.WasmLogsRequest, out *serve.Events[api.WasmLogLine]) error {
	if !w.known(req.Name) {
		return api.Errorf(api.KindNotFound, "no module named %q on this node (`bt ps` lists them)", req.Name)
	}
	lines, next, cancel := w.rt.Logs(req.Name, req.Follow)
	defer func() {
		if cancel != nil {
			cancel()
		}
	}()
	for _, l := range lines {
		if out.Send(api.WasmLogLine{Event: "line", Line: l}) != nil {
			return nil
		}
	}
	if !req.Follow || next == nil {
		_ = out.Send(api.WasmLogLine{Event: "end"})
		return nil
	}
	out.Start()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.ctx.Done():
			return nil
		case l, ok := <-next:
			if !ok {
				_ = out.Send(api.WasmLogLine{Event: "end"})
				return nil
			}
			if out.Send(api.WasmLogLine{Event: "line", Line: l}) != nil {
				return nil
			}
		}
	}
}

// known reports whether name is deployed here or has an instance.
func (w *wasmService) known(name string) bool {
	for _, in := range w.rt.Instances() {
		if in.Name == name {
			return true
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range w.deps {
		if d.name == name {
			return true
		}
	}
	return false
}
