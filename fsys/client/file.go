package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/go-cid"
	"golang.org/x/sync/singleflight"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/fsys"
)

// MaxFileSize bounds a file: MaxChunkRefs chunks.
const MaxFileSize = fsys.MaxChunkRefs * fsys.ChunkSize

// fileState is a file's write-back state in one client.
type fileState struct {
	c   *Client
	ino fsys.Ino
	in  *inoInfo
	key []byte

	// stale is set by the watcher when another writer changed the inode.
	stale atomic.Bool

	// syncMu serialises commits of this file.
	syncMu sync.Mutex

	// mu guards everything below.
	mu      sync.Mutex
	baseVer uint64            // version of the inode the view is based on
	n       *inode            // the view: committed inode plus pending changes
	dirty   map[uint64][]byte // plaintext of chunks not yet sealed (len = stored bytes)
	sealing map[uint64]*sealJob
	touched map[uint64]bool // chunks changed since baseVer
	attrs   fsys.SetAttr    // pending setattr fields (Size: explicit truncate)
	pending bool
	gen     uint64 // incremented per change
	err     error  // a background seal's failure, reported by the next sync
	lastEnd int64  // end of the last read, for read-ahead
}

type sealJob struct {
	buf  []byte
	done chan struct{}
	ref  chunkRef
	err  error
}

// chunkCache keeps decrypted chunks by CID (LRU), and the loads in
// flight, so that a read and the read-ahead of the same chunk share one
// load. Safe for concurrent use.
type chunkCache struct {
	lru   *lru.Cache[cid.Cid, []byte]
	loads singleflight.Group // by CID.KeyString()
}

func newChunkCache(n int) *chunkCache {
	c, err := lru.New[cid.Cid, []byte](n)
	if err != nil {
		panic(err) // n > 0: Config's default
	}
	return &chunkCache{lru: c}
}

// get returns the cached plaintext of c, or nil.
func (cc *chunkCache) get(c cid.Cid) []byte {
	p, _ := cc.lru.Get(c)
	return p
}

// file returns the write-back state of file ino, creating it.
func (c *Client) file(ctx context.Context, ino fsys.Ino) (*fileState, error) {
	c.mu.Lock()
	f := c.files[ino]
	c.mu.Unlock()
	if f != nil {
		if err := f.refresh(ctx); err != nil {
			return nil, err
		}
		return f, nil
	}
	in, ce, err := c.inodeOf(ctx, ino)
	if err != nil {
		return nil, err
	}
	switch ce.n.Kind {
	case fsys.KindDir:
		return nil, fmt.Errorf("fsys: %016x: %w", uint64(ino), fsys.ErrIsDir)
	case fsys.KindSymlink:
		return nil, fmt.Errorf("fsys: %016x is a symlink: %w", uint64(ino), fsys.ErrInvalid)
	}
	key, err := c.keyOf(in, ino)
	if err != nil {
		return nil, err
	}
	f = &fileState{c: c, ino: ino, in: in, key: key, baseVer: ce.rec.Version, n: ce.n.clone(),
		dirty: map[uint64][]byte{}, sealing: map[uint64]*sealJob{}, touched: map[uint64]bool{}, lastEnd: -1}
	c.mu.Lock()
	if g := c.files[ino]; g != nil {
		f = g
	} else {
		c.files[ino] = f
	}
	c.mu.Unlock()
	return f, nil
}

// refresh re-reads the inode when another writer changed it and this
// client has nothing pending.
func (f *fileState) refresh(ctx context.Context) error {
	if !f.stale.Load() {
		return nil
	}
	f.mu.Lock()
	pending := f.pending
	f.mu.Unlock()
	if pending {
		return nil // the commit re-applies on the fresh inode
	}
	_, ce, err := f.c.inodeOf(ctx, f.ino)
	if err != nil {
		if errors.Is(err, fsys.ErrUnavailable) {
			return nil
		}
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.pending {
		f.n, f.baseVer = ce.n.clone(), ce.rec.Version
		f.stale.Store(false)
	}
	return nil
}

func (c *Client) fileIfPending(ino fsys.Ino) *fileState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.files[ino]
}

func (c *Client) dropFile(ino fsys.Ino) {
	c.mu.Lock()
	f := c.files[ino]
	delete(c.files, ino)
	c.mu.Unlock()
	if f != nil {
		f.mu.Lock()
		for idx := range f.dirty {
			c.dirty.Add(-fsys.ChunkSize)
			delete(f.dirty, idx)
		}
		f.pending = false
		f.mu.Unlock()
	}
}

// attr is the view's attributes, if anything is pending.
func (f *fileState) attr() (fsys.Attr, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.pending {
		return fsys.Attr{}, false
	}
	return attrOf(f.ino, f.n, f.baseVer), true
}

// refIndex finds chunk idx in the view's refs.
func (f *fileState) refIndex(idx uint64) (int, bool) {
	refs := f.n.refs
	i := sort.Search(len(refs), func(i int) bool { return refs[i].Index >= idx })
	return i, i < len(refs) && refs[i].Index == idx
}

func (f *fileState) setRef(r chunkRef) {
	i, ok := f.refIndex(r.Index)
	if ok {
		f.n.refs[i] = r
		return
	}
	f.n.refs = append(f.n.refs, chunkRef{})
	copy(f.n.refs[i+1:], f.n.refs[i:])
	f.n.refs[i] = r
}

func (f *fileState) dropRef(idx uint64) {
	if i, ok := f.refIndex(idx); ok {
		f.n.refs = append(f.n.refs[:i], f.n.refs[i+1:]...)
	}
}

// ---- chunks ----

func sealChunk(key []byte, ino fsys.Ino, idx uint64, plain []byte) (chunkRef, blocks.Block, error) {
	r := chunkRef{Index: idx, Len: uint32(len(plain))}
	if _, err := rand.Read(r.Salt[:]); err != nil {
		return r, blocks.Block{}, err
	}
	g, err := gcmFor(key, r.Salt[:], infoChunk)
	if err != nil {
		return r, blocks.Block{}, err
	}
	ct := g.Seal(make([]byte, 0, len(plain)+tagSize), zeroNonce[:], plain, chunkAD(ino, idx))
	b, err := blocks.NewBlock(ct)
	if err != nil {
		return r, blocks.Block{}, err
	}
	r.CID = b.CID
	return r, b, nil
}

func openChunk(key []byte, ino fsys.Ino, r chunkRef, ct []byte) ([]byte, error) {
	if len(ct) != int(r.Len)+tagSize {
		return nil, fmt.Errorf("fsys: chunk %d of %016x: %d bytes: %w", r.Index, uint64(ino), len(ct), fsys.ErrIntegrity)
	}
	g, err := gcmFor(key, r.Salt[:], infoChunk)
	if err != nil {
		return nil, err
	}
	plain, err := g.Open(make([]byte, 0, r.Len), zeroNonce[:], ct, chunkAD(ino, r.Index))
	if err != nil {
		return nil, fmt.Errorf("fsys: chunk %d of %016x does not authenticate: %w", r.Index, uint64(ino), fsys.ErrIntegrity)
	}
	return plain, nil
}

// block returns a block from the store, fetching it if needed.
func (c *Client) block(ctx context.Context, v *volume, id cid.Cid) ([]byte, error) {
	data, err := c.cfg.Store.Get(ctx, id)
	if errors.Is(err, blocks.ErrNotFound) && c.cfg.Fetch != nil {
		if ferr := c.cfg.Fetch(ctx, []cid.Cid{id}, v.hostNode); ferr != nil {
			return nil, fmt.Errorf("fsys: fetch %s: %w: %v", id, fsys.ErrUnavailable, ferr)
		}
		data, err = c.cfg.Store.Get(ctx, id)
	}
	switch {
	case errors.Is(err, blocks.ErrNotFound):
		return nil, fmt.Errorf("fsys: block %s: %w", id, fsys.ErrUnavailable)
	case errors.Is(err, blocks.ErrIntegrity):
		return nil, fmt.Errorf("fsys: block %s: %w", id, fsys.ErrIntegrity)
	case err != nil:
		return nil, fmt.Errorf("fsys: block %s: %w", id, err)
	}
	return data, nil
}

// plain returns the plaintext of a stored chunk (cached). Concurrent calls
// for one chunk share one load; a waiter whose ctx ends stops waiting.
func (f *fileState) plain(ctx context.Context, r chunkRef) ([]byte, error) {
	cc := f.c.chunks
	if p, ok := cc.lru.Get(r.CID); ok {
		return p, nil
	}
	mine := false // this call ran the load
	ch := cc.loads.DoChan(r.CID.KeyString(), func() (any, error) {
		mine = true
		p, err := f.plainLoad(ctx, r)
		if err == nil {
			cc.lru.Add(r.CID, p)
		}
		return p, err
	})
	select {
	case res := <-ch:
		if res.Err == nil {
			return res.Val.([]byte), nil
		}
		if !mine {
			return f.plainLoad(ctx, r) // its ctx may have ended, not ours
		}
		return nil, res.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fileState) plainLoad(ctx context.Context, r chunkRef) ([]byte, error) {
	ct, err := f.c.block(ctx, f.in.vol, r.CID)
	if err != nil {
		return nil, err
	}
	return openChunk(f.key, f.ino, r, ct)
}

// ---- reads ----

// ReadAt reads from file ino at off.
func (c *Client) ReadAt(ctx context.Context, ino fsys.Ino, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("fsys: read at %d: %w", off, fsys.ErrInvalid)
	}
	f, err := c.file(ctx, ino)
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	size := int64(f.n.Size)
	if off >= size {
		f.mu.Unlock()
		return 0, nil
	}
	if int64(len(p)) > size-off {
		p = p[:size-off]
	}
	sequential := off == f.lastEnd
	f.lastEnd = off + int64(len(p))
	f.mu.Unlock()
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		idx, inner := uint64(pos/fsys.ChunkSize), int(pos%fsys.ChunkSize)
		m := min(len(p)-n, fsys.ChunkSize-inner)
		if err := f.readChunk(ctx, idx, inner, p[n:n+m]); err != nil {
			return n, err
		}
		n += m
	}
	if sequential {
		f.readAhead(uint64((off+int64(n))/fsys.ChunkSize) + 1)
	}
	return n, nil
}

// readChunk fills dst from chunk idx at inner.
func (f *fileState) readChunk(ctx context.Context, idx uint64, inner int, dst []byte) error {
	f.mu.Lock()
	var src []byte
	var ref chunkRef
	hasRef := false
	if b, ok := f.dirty[idx]; ok {
		src = b
	} else if j, ok := f.sealing[idx]; ok {
		src = j.buf
	} else if i, ok := f.refIndex(idx); ok {
		ref, hasRef = f.n.refs[i], true
	}
	if src != nil {
		copyChunk(dst, src, inner)
		f.mu.Unlock()
		return nil
	}
	f.mu.Unlock()
	if !hasRef {
		clear(dst)
		return nil
	}
	pl, err := f.plain(ctx, ref)
	if err != nil {
		return err
	}
	copyChunk(dst, pl, inner)
	return nil
}

func copyChunk(dst, src []byte, inner int) {
	n := 0
	if inner < len(src) {
		n = copy(dst, src[inner:])
	}
	clear(dst[n:])
}

// readAhead decrypts the chunks from idx on in the background (bounded;
// skipped when the slots are busy).
func (f *fileState) readAhead(idx uint64) {
	f.mu.Lock()
	var refs []chunkRef
	for i := uint64(0); i < readAhead; i++ {
		if j, ok := f.refIndex(idx + i); ok {
			if _, d := f.dirty[idx+i]; !d {
				refs = append(refs, f.n.refs[j])
			}
		}
	}
	f.mu.Unlock()
	for _, r := range refs {
		if f.c.chunks.get(r.CID) != nil {
			continue
		}
		select {
		case f.c.aheadSem <- struct{}{}:
		default:
			return
		}
		f.c.wg.Add(1)
		go func() {
			defer f.c.wg.Done()
			defer func() { <-f.c.aheadSem }()
			f.plain(f.c.ctx, r)
		}()
	}
}

// ---- writes ----

// WriteAt writes p at off into the client's buffer (see FS).
func (c *Client) WriteAt(ctx context.Context, ino fsys.Ino, p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > MaxFileSize || off+int64(len(p)) < off {
		return 0, fmt.Errorf("fsys: write at %d: %w", off, fsys.ErrInvalid)
	}
	f, err := c.file(ctx, ino)
	if err != nil {
		return 0, err
	}
	if f.in.unlinked != 0 {
		return 0, fmt.Errorf("fsys: write to an unlinked file: %w", fsys.ErrNotExist)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		idx, inner := uint64(pos/fsys.ChunkSize), int(pos%fsys.ChunkSize)
		m := min(len(p)-n, fsys.ChunkSize-inner)
		if err := f.writeChunk(ctx, idx, inner, p[n:n+m]); err != nil {
			return n, err
		}
		n += m
	}
	if c.dirty.Load() > c.cfg.MaxDirty {
		if err := f.flush(ctx, true); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (f *fileState) writeChunk(ctx context.Context, idx uint64, inner int, src []byte) error {
	f.mu.Lock()
	buf, ok := f.dirty[idx]
	if !ok {
		var base []byte
		if j, ok := f.sealing[idx]; ok {
			base = j.buf
			delete(f.sealing, idx) // superseded: its result is dropped
		} else if i, ok := f.refIndex(idx); ok {
			r := f.n.refs[i]
			// Load the old bytes unless this write covers them all.
			if inner > 0 || inner+len(src) < int(r.Len) {
				f.mu.Unlock()
				pl, err := f.plain(ctx, r)
				if err != nil {
					return err
				}
				f.mu.Lock()
				if b, ok := f.dirty[idx]; ok { // raced with another write
					buf = b
				} else {
					base = pl
				}
			}
		}
		if buf == nil {
			buf = make([]byte, len(base), bufCap(max(len(base), inner+len(src))))
			copy(buf, base)
			f.c.dirty.Add(fsys.ChunkSize)
		}
	}
	end := inner + len(src)
	if end > len(buf) {
		old := len(buf)
		if end > cap(buf) {
			buf = append(make([]byte, 0, bufCap(end)), buf...)
		}
		buf = buf[:end]
		if inner > old {
			clear(buf[old:inner])
		}
	}
	copy(buf[inner:], src)
	f.dirty[idx] = buf
	f.touched[idx] = true
	if sz := idx*fsys.ChunkSize + uint64(end); sz > f.n.Size {
		f.n.Size = sz
	}
	f.n.Mtime = f.c.now().UnixNano()
	f.n.Ctime = f.n.Mtime
	f.pending = true
	f.gen++
	full := len(buf) == fsys.ChunkSize
	if full {
		f.startSealLocked(idx)
	}
	f.mu.Unlock()
	return nil
}

// smallBuf bounds the chunk buffers allocated to size: a write that ends
// within it gets a buffer of its length (rounded up to 4 KiB), so that a
// small file does not cost a whole zeroed chunk; larger ones get
// ChunkSize at once. Every dirty buffer counts as ChunkSize towards
// MaxDirty whatever its capacity.
const smallBuf = 64 << 10

func bufCap(n int) int {
	if n > smallBuf {
		return fsys.ChunkSize
	}
	return (n + 4095) &^ 4095
}

// startSealLocked moves chunk idx from dirty to a background seal.
func (f *fileState) startSealLocked(idx uint64) {
	buf := f.dirty[idx]
	delete(f.dirty, idx)
	j := &sealJob{buf: buf, done: make(chan struct{})}
	f.sealing[idx] = j
	f.c.wg.Add(1)
	go func() {
		defer f.c.wg.Done()
		select {
		case f.c.sealSem <- struct{}{}:
		case <-f.c.ctx.Done():
			j.err = f.c.ctx.Err()
			close(j.done)
			f.finishSeal(idx, j)
			return
		}
		r, b, err := sealChunk(f.key, f.ino, idx, buf)
		if err == nil {
			err = f.c.cfg.Store.Put(f.c.ctx, b)
		}
		<-f.c.sealSem
		j.ref, j.err = r, err
		close(j.done)
		f.finishSeal(idx, j)
	}()
}

func (f *fileState) finishSeal(idx uint64, j *sealJob) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sealing[idx] != j {
		f.c.dirty.Add(-fsys.ChunkSize) // superseded: a new dirty buffer took over (and counts itself)
		return
	}
	delete(f.sealing, idx)
	if j.err != nil {
		// Keep the data: back to dirty, and report at the next sync.
		if _, ok := f.dirty[idx]; !ok {
			f.dirty[idx] = j.buf
			f.err = j.err
			return
		}
	} else {
		f.setRef(j.ref)
	}
	f.c.dirty.Add(-fsys.ChunkSize)
}

// flush seals every dirty chunk (in the background) and, if wait, waits
// for all seals.
func (f *fileState) flush(ctx context.Context, wait bool) error {
	f.mu.Lock()
	for idx, b := range f.dirty {
		if len(b) == 0 {
			delete(f.dirty, idx)
			f.dropRef(idx)
			f.c.dirty.Add(-fsys.ChunkSize)
			continue
		}
		f.startSealLocked(idx)
	}
	jobs := make([]*sealJob, 0, len(f.sealing))
	for _, j := range f.sealing {
		jobs = append(jobs, j)
	}
	f.mu.Unlock()
	if !wait {
		return nil
	}
	for _, j := range jobs {
		select {
		case <-j.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.err; err != nil {
		f.err = nil
		if errors.Is(err, blocks.ErrNoSpace) {
			return fmt.Errorf("fsys: seal: %w: %v", fsys.ErrNoSpace, err)
		}
		return fmt.Errorf("fsys: seal: %w", err)
	}
	return nil
}

// Fsync commits file ino's pending writes and returns when the host holds
// them, and every change this client committed to ino's volume before,
// durably (fsync(2)); on a directory (or a file without pending writes)
// it makes those changes durable. Against a host that is not a Syncer
// every commit is durable already. Outcomes: nil, ErrNotExist (unknown
// inode), ErrUnavailable, ErrConflict, ErrNoSpace, ErrIntegrity (the host
// lost unsynced versions in a crash of its machine). Safe for concurrent
// use.
func (c *Client) Fsync(ctx context.Context, ino fsys.Ino) error {
	c.mu.Lock()
	f := c.files[ino]
	c.mu.Unlock()
	in, err := c.info(ino)
	if err != nil {
		return err
	}
	if f != nil {
		if err := f.sync(ctx, true); err != nil {
			return err
		}
	}
	return c.syncVolume(ctx, in.vol)
}

// Flush starts committing file ino's pending writes in the background and
// returns at once: close(2) without durability (POSIX promises durability
// only on fsync), so that the commit overlaps the caller's next operations
// and shares the host's batch with them (group commit). The next Fsync of
// ino waits for it and commits whatever it did not (a failed background
// commit leaves the writes pending; it is logged). Flush does not make
// anything durable. Outcomes: nil, ErrNotExist (unknown inode),
// ErrUnavailable (client closed). Safe for concurrent use.
func (c *Client) Flush(ctx context.Context, ino fsys.Ino) error {
	c.mu.Lock()
	f, closed := c.files[ino], c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("fsys: client closed: %w", fsys.ErrUnavailable)
	}
	if f == nil {
		_, err := c.info(ino)
		return err
	}
	f.mu.Lock()
	pending := f.pending
	f.mu.Unlock()
	if !pending {
		return nil
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := f.sync(c.ctx, false); err != nil && c.ctx.Err() == nil {
			c.log.Warn("background commit failed; the next fsync retries", "ino", fmt.Sprintf("%016x", uint64(ino)), "err", err)
		}
	}()
	return nil
}

// CommitFile commits file ino's pending writes write-back (ordered and
// visible at the host, durable only after a later Fsync) and returns when
// they are committed, waiting for a commit that Flush started: what the
// kernel adapter needs before an unlink, so that descriptors still open
// on the file read what was written. Outcomes: nil, ErrNotExist (unknown
// inode), ErrUnavailable, ErrConflict, ErrNoSpace. Safe for concurrent
// use.
func (c *Client) CommitFile(ctx context.Context, ino fsys.Ino) error {
	c.mu.Lock()
	f := c.files[ino]
	c.mu.Unlock()
	if f == nil {
		_, err := c.info(ino)
		return err
	}
	return f.sync(ctx, false)
}

// sync seals the dirty chunks, waits for them, and commits the inode,
// re-applying this client's changes on a fresh inode after a conflict;
// durable: with a synced commit (Fsync), else write-back (Flush).
func (f *fileState) sync(ctx context.Context, durable bool) error {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	for {
		if err := f.flush(ctx, true); err != nil {
			return err
		}
		f.mu.Lock()
		done := len(f.dirty) == 0 && len(f.sealing) == 0
		f.mu.Unlock()
		if done {
			break
		}
	}
	f.mu.Lock()
	if !f.pending {
		f.mu.Unlock()
		return nil
	}
	view := f.n.clone()
	baseVer, gen := f.baseVer, f.gen
	touched := make(map[uint64]bool, len(f.touched))
	for k := range f.touched {
		touched[k] = true
	}
	attrs := f.attrs
	f.mu.Unlock()

	var committed *inode
	ver, err := f.c.updateOpt(ctx, f.in.vol, "write", durable, func(b *txb) error {
		_, cur, curVer, err := b.inode(ctx, f.ino)
		if err != nil {
			return err
		}
		n := view.clone()
		if curVer != baseVer {
			n = reapply(cur, view, touched, attrs)
		}
		committed = n
		return b.putInode(f.ino, b.parents[f.ino], b.grants[f.ino], n, f.key)
	})
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gen == gen {
		f.n = committed.clone()
		f.touched = map[uint64]bool{}
		f.attrs = fsys.SetAttr{}
		f.pending = false
		f.stale.Store(false)
	}
	if ver != 0 {
		f.baseVer = ver
	}
	return nil
}

// reapply puts this client's changes (touched chunks, explicit size and
// attributes) over the fresh inode cur: the last committed writer wins per
// chunk.
func reapply(cur, view *inode, touched map[uint64]bool, attrs fsys.SetAttr) *inode {
	n := cur.clone()
	tmp := &fileState{n: n}
	for idx := range touched {
		if i, ok := (&fileState{n: view}).refIndex(idx); ok {
			tmp.setRef(view.refs[i])
		} else {
			tmp.dropRef(idx)
		}
	}
	if attrs.Size != nil {
		n.Size = view.Size
		for len(n.refs) > 0 && n.refs[len(n.refs)-1].Index*fsys.ChunkSize >= n.Size {
			n.refs = n.refs[:len(n.refs)-1]
		}
		if k := len(n.refs); k > 0 {
			if last := &n.refs[k-1]; last.Index*fsys.ChunkSize+uint64(last.Len) > n.Size {
				// Another writer's chunk straddles our truncation: keep its
				// bytes up to the new size only by dropping it (its
				// writer's data past the size is gone anyway).
				n.refs = n.refs[:k-1]
			}
		}
	} else if view.Size > n.Size {
		n.Size = view.Size
	}
	if k := len(n.refs); k > 0 {
		if last := n.refs[k-1]; last.Index*fsys.ChunkSize+uint64(last.Len) > n.Size {
			n.Size = last.Index*fsys.ChunkSize + uint64(last.Len)
		}
	}
	if attrs.Mode != nil {
		n.Mode = view.Mode
	}
	if attrs.Atime != nil {
		n.Atime = view.Atime
	}
	n.Mtime, n.Ctime = max(n.Mtime, view.Mtime), max(n.Ctime, view.Ctime)
	return n
}

// setattr applies sa to the view.
func (f *fileState) setattr(ctx context.Context, sa fsys.SetAttr) error {
	if f.in.unlinked != 0 {
		return fmt.Errorf("fsys: setattr of an unlinked file: %w", fsys.ErrNotExist)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.c.now().UnixNano()
	if sa.Size != nil {
		size := *sa.Size
		if size > MaxFileSize {
			return fmt.Errorf("fsys: truncate to %d: %w", size, fsys.ErrInvalid)
		}
		if size < f.n.Size {
			if err := f.truncateLocked(ctx, size); err != nil {
				return err
			}
		}
		f.n.Size = size
		f.n.Mtime = now
		f.attrs.Size = &size
	}
	applyAttrs(f.n, sa, now)
	if sa.Mode != nil {
		f.attrs.Mode = sa.Mode
	}
	if sa.Atime != nil {
		f.attrs.Atime = sa.Atime
	}
	f.pending = true
	f.gen++
	return nil
}

// truncateLocked drops what lies past size: whole chunks, and the tail of
// the boundary chunk (resealed, so that a later extension reads zeros).
func (f *fileState) truncateLocked(ctx context.Context, size uint64) error {
	first := (size + fsys.ChunkSize - 1) / fsys.ChunkSize // first chunk wholly past size
	for idx := range f.dirty {
		if idx >= first {
			delete(f.dirty, idx)
			f.c.dirty.Add(-fsys.ChunkSize)
			f.touched[idx] = true
		}
	}
	for idx := range f.sealing {
		if idx >= first {
			delete(f.sealing, idx) // finishSeal drops the result
			f.touched[idx] = true
		}
	}
	for len(f.n.refs) > 0 && f.n.refs[len(f.n.refs)-1].Index >= first {
		f.touched[f.n.refs[len(f.n.refs)-1].Index] = true
		f.n.refs = f.n.refs[:len(f.n.refs)-1]
	}
	inner := int(size % fsys.ChunkSize)
	if inner == 0 {
		return nil
	}
	idx := size / fsys.ChunkSize
	if b, ok := f.dirty[idx]; ok {
		if len(b) > inner {
			f.dirty[idx] = b[:inner]
		}
		return nil
	}
	var base []byte
	if j, ok := f.sealing[idx]; ok {
		base = j.buf
		delete(f.sealing, idx)
	} else if i, ok := f.refIndex(idx); ok && int(f.n.refs[i].Len) > inner {
		r := f.n.refs[i]
		f.mu.Unlock()
		pl, err := f.plain(ctx, r)
		f.mu.Lock()
		if err != nil {
			return err
		}
		base = pl
	} else {
		return nil
	}
	buf := make([]byte, inner, bufCap(inner))
	copy(buf, base)
	f.dirty[idx] = buf
	f.c.dirty.Add(fsys.ChunkSize)
	f.touched[idx] = true
	return nil
}
