package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/wasm"
)

// DirName is the name of a node's deployment directory, under its node
// path.
const DirName = "deploy"

// Timings of the controller.
const (
	// Rescan is how often the deployment directory is listed even
	// without a notification.
	Rescan = 2 * time.Second
	// scanTimeout bounds one scan, starts included.
	scanTimeout = 2 * time.Minute
	// mkdirRetry is how often a missing deployment directory is tried
	// again.
	mkdirRetry = 10 * time.Second
	// stopTimeout bounds stopping one instance.
	stopTimeout = 10 * time.Second
)

// FS is what the controller reads the deployment directory with (an
// fsys.Client).
type FS interface {
	Walk(ctx context.Context, p paths.Path) (fsys.Attr, error)
	Readdir(ctx context.Context, dir fsys.Ino) ([]fsys.DirEntry, error)
	Getattr(ctx context.Context, ino fsys.Ino) (fsys.Attr, error)
	ReadAt(ctx context.Context, ino fsys.Ino, p []byte, off int64) (int, error)
}

// Runtime is what the controller starts and stops modules on (a
// wasm.Runtime).
type Runtime interface {
	Start(ctx context.Context, sm *wasm.SignedManifest) error
	Stop(ctx context.Context, name string) error
}

// Config configures a Controller.
type Config struct {
	// Node is this node's path; its deployment directory is
	// Node/deploy.
	Node    paths.Path
	FS      FS
	Runtime Runtime
	// MakeDir makes a directory and its missing parents (the deployment
	// directory, made when this node may).
	MakeDir func(ctx context.Context, p paths.Path) error
	// Verify verifies a manifest for this node (Checks.Verify).
	Verify func(sm *wasm.SignedManifest) error
	// Expose, if set, makes a started instance reachable (by messaging)
	// and returns what undoes it, or nil.
	Expose func(name string) (remove func())
	Log    *slog.Logger
	// Clock is the time (time.Now when nil).
	Clock func() time.Time
}

// Controller is the deployment controller's driver: a service that lists
// the deployment directory at every notification (Notified) and every
// Rescan, reads the manifest files the Reconciler asks for, and applies
// its actions to the runtime. Only ErrNotExist of the directory counts as
// "empty": while the volume's host is unreachable nothing is stopped. It
// is safe for concurrent use.
type Controller struct {
	cfg    Config
	dir    paths.Path
	log    *slog.Logger
	ctx    context.Context // the controller's life; cancelled under mu
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // a scan is wanted (capacity 1)
	once   sync.Once

	// scanMu serialises scans (the watcher's and Rescan's).
	scanMu sync.Mutex

	// mu guards rec, exposed, dirIno and files.
	mu      sync.Mutex
	rec     *Reconciler
	exposed map[string]func() // by file: Expose's undo
	dirIno  fsys.Ino          // the deployment directory's inode, 0 until found
	files   map[fsys.Ino]bool // the inodes of its files at the last scan
}

// New returns a controller for cfg.Node's deployment directory; it
// watches once it serves.
func New(cfg Config) (*Controller, error) {
	dir, err := cfg.Node.Join(DirName)
	if err != nil {
		return nil, fmt.Errorf("deploy: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	c := &Controller{cfg: cfg, dir: dir, log: cfg.Log, kick: make(chan struct{}, 1), exposed: make(map[string]func()),
		rec: NewReconciler(cfg.Node, dir, Checks{Verify: cfg.Verify})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Dir is the deployment directory.
func (c *Controller) Dir() paths.Path { return c.dir }

// Deployments is the status of every file of the directory.
func (c *Controller) Deployments() []Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rec.Deployments()
}

// Serve watches the deployment directory until ctx ends or the
// controller closes; it returns nil then.
func (c *Controller) Serve(ctx context.Context) error {
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		return nil
	}
	c.wg.Add(1)
	c.mu.Unlock()
	defer c.wg.Done()
	defer context.AfterFunc(ctx, c.cancel)()
	t := time.NewTicker(Rescan)
	defer t.Stop()
	made, next := false, time.Time{}
	for {
		// Until the directory exists, try to make it every mkdirRetry
		// (a joined node's own directory is made by the root volume's
		// host once it is a member).
		if now := c.cfg.Clock(); !made && !now.Before(next) {
			made, next = c.makeDir(), now.Add(mkdirRetry)
		}
		c.Rescan()
		select {
		case <-c.ctx.Done():
			return nil
		case <-t.C:
		case <-c.kick:
		}
	}
}

// Close stops watching and waits for Serve; it does not stop the
// instances (closing the runtime does). Idempotent.
func (c *Controller) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.cancel() // under mu: Serve adds itself to wg only before this
		c.mu.Unlock()
		c.wg.Wait()
	})
	return nil
}

// Notified is the file system's invalidation callback (fsys.Client
// Notify): a change to the deployment directory or to one of its files
// wakes the watcher. Changes made through this node's own client are not
// notified; Rescan after them, or wait for the next Rescan.
func (c *Controller) Notified(inv fsys.Invalidation) {
	c.mu.Lock()
	hit := c.dirIno != 0 && (inv.Ino == c.dirIno || inv.Dir == c.dirIno) || inv.Ino != 0 && c.files[inv.Ino]
	c.mu.Unlock()
	if hit {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// makeDir makes the deployment directory if it is missing and this node
// may; it reports whether the directory exists.
func (c *Controller) makeDir() bool {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if _, err := c.cfg.FS.Walk(ctx, c.dir); err == nil {
		return true
	}
	if err := c.cfg.MakeDir(ctx, c.dir); err != nil {
		c.log.Debug("cannot make the deployment directory yet", "dir", c.dir, "err", err)
		return false
	}
	c.log.Info("deployment directory made", "dir", c.dir)
	return true
}

// listed is one file of the deployment directory as a scan sees it.
type listed struct {
	File
	ino fsys.Ino
}

// Rescan lists the deployment directory once and reconciles; it returns
// when done (for callers that just changed the directory).
func (c *Controller) Rescan() {
	c.scanMu.Lock()
	defer c.scanMu.Unlock()
	ctx, cancel := context.WithTimeout(c.ctx, scanTimeout)
	defer cancel()
	files, err := c.list(ctx)
	if err != nil {
		if c.ctx.Err() == nil {
			c.log.Debug("cannot list the deployment directory", "dir", c.dir, "err", err)
		}
		return
	}
	reads := make(map[string]Read)
	listing := make([]File, 0, len(files))
	for i, l := range files {
		listing = append(listing, l.File)
		if i >= MaxDeployments {
			continue // refused unread
		}
		c.mu.Lock()
		need := c.rec.NeedsRead(l.File)
		c.mu.Unlock()
		if !need {
			continue
		}
		data, err := readAll(ctx, c.cfg.FS, l.ino, l.Size)
		if ctx.Err() != nil || errors.Is(err, fsys.ErrUnavailable) {
			return // try again next scan, leaving things as they are
		}
		reads[l.Name] = Read{Data: data, Err: err}
	}
	c.mu.Lock()
	acts := c.rec.Reconcile(c.cfg.Clock(), listing, reads)
	c.mu.Unlock()
	for _, a := range acts {
		c.apply(ctx, a)
	}
}

// apply takes one action of the reconciler.
func (c *Controller) apply(ctx context.Context, a Action) {
	switch a.Kind {
	case Report:
		if a.Ignored {
			c.log.Info("manifest ignored: for other nodes", "file", a.File, "name", a.Name, "reason", a.Why)
		} else {
			c.log.Warn("manifest refused", "file", a.File, "name", a.Name, "reason", a.Why)
		}
	case Stop:
		c.mu.Lock()
		undo := c.exposed[a.File]
		delete(c.exposed, a.File)
		c.mu.Unlock()
		if undo != nil {
			undo()
		}
		sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := c.cfg.Runtime.Stop(sctx, a.Name); err != nil {
			c.log.Warn("stopping a module", "name", a.Name, "err", err)
			return
		}
		c.log.Info("module stopped", "name", a.Name, "file", a.File, "why", a.Why)
	case Start:
		err := c.cfg.Runtime.Start(ctx, a.Manifest)
		c.mu.Lock()
		rep, ok := c.rec.Started(a.File, err, c.cfg.Clock())
		c.mu.Unlock()
		switch {
		case ok:
			c.apply(ctx, rep)
		case err == nil:
			var undo func()
			if c.cfg.Expose != nil {
				undo = c.cfg.Expose(a.Name)
			}
			c.mu.Lock()
			c.exposed[a.File] = undo
			c.mu.Unlock()
			c.log.Info("module started", "name", a.Name, "file", a.File, "module", a.Manifest.Module)
		case errors.Is(err, wasm.ErrNotThisNode):
		default:
			c.log.Warn("module did not start", "name", a.Name, "file", a.File, "err", err)
		}
	}
}

// list returns the files of the deployment directory in name order (the
// Reconciler's); a missing directory has none.
func (c *Controller) list(ctx context.Context) ([]listed, error) {
	fs := c.cfg.FS
	dir, err := fs.Walk(ctx, c.dir)
	if errors.Is(err, fsys.ErrNotExist) {
		c.mu.Lock()
		c.dirIno = 0
		c.mu.Unlock()
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if dir.Kind != fsys.KindDir {
		return nil, nil
	}
	c.mu.Lock()
	c.dirIno = dir.Ino
	c.mu.Unlock()
	ents, err := fs.Readdir(ctx, dir.Ino)
	if err != nil {
		return nil, err
	}
	var out []listed
	inos := make(map[fsys.Ino]bool, len(ents))
	for _, e := range ents {
		if e.Kind != fsys.KindFile || strings.HasPrefix(e.Name, ".") {
			continue // editors' and cp's temporary files are hidden ones
		}
		a, err := fs.Getattr(ctx, e.Ino)
		if err != nil {
			return nil, err
		}
		out = append(out, listed{File: File{Name: e.Name, Version: a.Version, Size: a.Size}, ino: e.Ino})
		inos[e.Ino] = true
	}
	c.mu.Lock()
	c.files = inos
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b listed) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// readAll reads file ino, size bytes long when listed, and one byte more
// if it has grown (so a file over MaxManifest is seen to be).
func readAll(ctx context.Context, fs FS, ino fsys.Ino, size uint64) ([]byte, error) {
	buf := make([]byte, size+1)
	off := 0
	for off < len(buf) {
		n, err := fs.ReadAt(ctx, ino, buf[off:], int64(off))
		off += n
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
	}
	return buf[:off], nil
}
