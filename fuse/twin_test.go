package fuse

import (
	"context"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

// twin is an in-memory fsys.FS: a unit-test double for the adapter's own
// logic (invalidation, errno mapping), never the only test of a feature.
// Every feature test runs on the real client.Client (fuse_test.go).
type twin struct {
	mu      sync.Mutex
	roots   map[paths.ID]fsys.Ino
	denied  map[paths.ID]bool
	inodes  map[fsys.Ino]*twinInode
	notify  []func(fsys.Invalidation)
	fsyncs  int
	version uint64
}

const twinChunk = 64 << 10

type twinInode struct {
	attr    fsys.Attr
	parent  fsys.Ino
	entries map[string]fsys.Ino
	chunks  map[int64][]byte
	target  string
}

func newTwin(self paths.ID) *twin {
	t := &twin{roots: map[paths.ID]fsys.Ino{}, denied: map[paths.ID]bool{}, inodes: map[fsys.Ino]*twinInode{}}
	t.roots[self] = t.newInode(fsys.KindDir, 0o755, 0).attr.Ino
	return t
}

func (t *twin) newInode(k fsys.Kind, mode uint32, parent fsys.Ino) *twinInode {
	now := time.Now()
	t.version++
	in := &twinInode{attr: fsys.Attr{Ino: fsys.Ino(rand.Uint64() | 2), Kind: k, Mode: mode, Nlink: 1,
		Mtime: now, Ctime: now, Atime: now, Version: t.version}, parent: parent}
	if k == fsys.KindDir {
		in.entries = map[string]fsys.Ino{}
		in.attr.Nlink = 2
	}
	if k == fsys.KindFile {
		in.chunks = map[int64][]byte{}
	}
	t.inodes[in.attr.Ino] = in
	return in
}

func (t *twin) get(ino fsys.Ino) (*twinInode, error) {
	in := t.inodes[ino]
	if in == nil {
		return nil, fsys.ErrNotExist
	}
	return in, nil
}

func (t *twin) dir(ino fsys.Ino) (*twinInode, error) {
	in, err := t.get(ino)
	if err != nil {
		return nil, err
	}
	if in.attr.Kind != fsys.KindDir {
		return nil, fsys.ErrNotDir
	}
	return in, nil
}

func (t *twin) Root(ctx context.Context, root paths.ID) (fsys.Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.denied[root] {
		return fsys.Attr{}, fsys.ErrPermission
	}
	ino, ok := t.roots[root]
	if !ok {
		return fsys.Attr{}, fsys.ErrNotExist
	}
	return t.inodes[ino].attr, nil
}

func (t *twin) Walk(ctx context.Context, p paths.Path) (fsys.Attr, error) {
	return fsys.Attr{}, fsys.ErrNotSupported
}

func (t *twin) Lookup(ctx context.Context, dir fsys.Ino, name string) (fsys.Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.dir(dir)
	if err != nil {
		return fsys.Attr{}, err
	}
	ino, ok := d.entries[name]
	if !ok {
		return fsys.Attr{}, fsys.ErrNotExist
	}
	return t.inodes[ino].attr, nil
}

func (t *twin) Getattr(ctx context.Context, ino fsys.Ino) (fsys.Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return fsys.Attr{}, err
	}
	return in.attr, nil
}

func (t *twin) Setattr(ctx context.Context, ino fsys.Ino, sa fsys.SetAttr) (fsys.Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return fsys.Attr{}, err
	}
	if sa.Size != nil {
		if in.attr.Kind != fsys.KindFile {
			return fsys.Attr{}, fsys.ErrIsDir
		}
		in.truncate(int64(*sa.Size))
		in.attr.Mtime = time.Now()
	}
	if sa.Mode != nil {
		in.attr.Mode = *sa.Mode & 07777
	}
	if sa.Mtime != nil {
		in.attr.Mtime = *sa.Mtime
	}
	if sa.Atime != nil {
		in.attr.Atime = *sa.Atime
	}
	in.attr.Ctime = time.Now()
	return in.attr, nil
}

func (in *twinInode) truncate(size int64) {
	for off, c := range in.chunks {
		switch {
		case off >= size:
			delete(in.chunks, off)
		case off+int64(len(c)) > size:
			in.chunks[off] = c[:size-off]
		}
	}
	in.attr.Size = uint64(size)
}

func (t *twin) Readdir(ctx context.Context, dir fsys.Ino) ([]fsys.DirEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.dir(dir)
	if err != nil {
		return nil, err
	}
	var out []fsys.DirEntry
	for name, ino := range d.entries {
		out = append(out, fsys.DirEntry{Name: name, Ino: ino, Kind: t.inodes[ino].attr.Kind})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (t *twin) add(dir fsys.Ino, name string, k fsys.Kind, mode uint32) (*twinInode, error) {
	if len(name) > fsys.MaxName {
		return nil, fsys.ErrNameTooLong
	}
	d, err := t.dir(dir)
	if err != nil {
		return nil, err
	}
	if _, ok := d.entries[name]; ok {
		return nil, fsys.ErrExist
	}
	in := t.newInode(k, mode, dir)
	d.entries[name] = in.attr.Ino
	d.attr.Size = uint64(len(d.entries))
	d.attr.Mtime = time.Now()
	return in, nil
}

func (t *twin) Create(ctx context.Context, dir fsys.Ino, name string, mode uint32, excl bool) (fsys.Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d, err := t.dir(dir); err == nil && !excl {
		if ino, ok := d.entries[name]; ok {
			if t.inodes[ino].attr.Kind == fsys.KindDir {
				return fsys.Attr{}, fsys.ErrIsDir
			}
			return t.inodes[ino].attr, nil
		}
	}
	in, err := t.add(dir, name, fsys.KindFile, mode)
	if err != nil {
		return fsys.Attr{}, err
	}
	return in.attr, nil
}

func (t *twin) Mkdir(ctx context.Context, dir fsys.Ino, name string, mode uint32) (fsys.Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.add(dir, name, fsys.KindDir, mode)
	if err != nil {
		return fsys.Attr{}, err
	}
	return in.attr, nil
}

func (t *twin) Symlink(ctx context.Context, dir fsys.Ino, name, target string) (fsys.Attr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.add(dir, name, fsys.KindSymlink, 0o777)
	if err != nil {
		return fsys.Attr{}, err
	}
	in.target = target
	in.attr.Size = uint64(len(target))
	return in.attr, nil
}

func (t *twin) Readlink(ctx context.Context, ino fsys.Ino) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return "", err
	}
	if in.attr.Kind != fsys.KindSymlink {
		return "", fsys.ErrInvalid
	}
	return in.target, nil
}

func (t *twin) remove(dir fsys.Ino, name string, wantDir bool) error {
	d, err := t.dir(dir)
	if err != nil {
		return err
	}
	ino, ok := d.entries[name]
	if !ok {
		return fsys.ErrNotExist
	}
	in := t.inodes[ino]
	switch {
	case wantDir && in.attr.Kind != fsys.KindDir:
		return fsys.ErrNotDir
	case !wantDir && in.attr.Kind == fsys.KindDir:
		return fsys.ErrIsDir
	case wantDir && len(in.entries) > 0:
		return fsys.ErrNotEmpty
	}
	delete(d.entries, name)
	in.attr.Nlink = 0 // kept: it may be open
	d.attr.Size = uint64(len(d.entries))
	return nil
}

func (t *twin) Unlink(ctx context.Context, dir fsys.Ino, name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.remove(dir, name, false)
}

func (t *twin) Rmdir(ctx context.Context, dir fsys.Ino, name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.remove(dir, name, true)
}

func (t *twin) Rename(ctx context.Context, dir fsys.Ino, name string, newDir fsys.Ino, newName string, flags fsys.RenameFlags) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	d, err := t.dir(dir)
	if err != nil {
		return err
	}
	nd, err := t.dir(newDir)
	if err != nil {
		return err
	}
	ino, ok := d.entries[name]
	if !ok {
		return fsys.ErrNotExist
	}
	old, exists := nd.entries[newName]
	if flags&fsys.RenameExchange != 0 {
		if !exists {
			return fsys.ErrNotExist
		}
		d.entries[name], nd.entries[newName] = old, ino
		t.inodes[old].parent, t.inodes[ino].parent = dir, newDir
		return nil
	}
	if exists {
		if old == ino {
			return nil
		}
		if flags&fsys.RenameNoReplace != 0 {
			return fsys.ErrExist
		}
		oi, si := t.inodes[old], t.inodes[ino]
		switch {
		case oi.attr.Kind == fsys.KindDir && si.attr.Kind != fsys.KindDir:
			return fsys.ErrIsDir
		case oi.attr.Kind != fsys.KindDir && si.attr.Kind == fsys.KindDir:
			return fsys.ErrNotDir
		case oi.attr.Kind == fsys.KindDir && len(oi.entries) > 0:
			return fsys.ErrNotEmpty
		}
		oi.attr.Nlink = 0 // kept: it may be open
	}
	// A directory may not move into itself.
	for p := newDir; p != 0; p = t.inodes[p].parent {
		if p == ino {
			return fsys.ErrInvalid
		}
	}
	delete(d.entries, name)
	nd.entries[newName] = ino
	t.inodes[ino].parent = newDir
	d.attr.Size, nd.attr.Size = uint64(len(d.entries)), uint64(len(nd.entries))
	return nil
}

func (t *twin) ReadAt(ctx context.Context, ino fsys.Ino, p []byte, off int64) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return 0, err
	}
	if in.attr.Kind != fsys.KindFile {
		return 0, fsys.ErrIsDir
	}
	size := int64(in.attr.Size)
	if off >= size {
		return 0, nil
	}
	n := min(int64(len(p)), size-off)
	for i := int64(0); i < n; {
		pos := off + i
		base := pos - pos%twinChunk
		c := in.chunks[base]
		k := min(n-i, base+twinChunk-pos)
		dst := p[i : i+k]
		clear(dst)
		if lo := pos - base; lo < int64(len(c)) {
			copy(dst, c[lo:])
		}
		i += k
	}
	return int(n), nil
}

func (t *twin) WriteAt(ctx context.Context, ino fsys.Ino, p []byte, off int64) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return 0, err
	}
	if in.attr.Kind != fsys.KindFile {
		return 0, fsys.ErrIsDir
	}
	for i := int64(0); i < int64(len(p)); {
		pos := off + i
		base := pos - pos%twinChunk
		k := min(int64(len(p))-i, base+twinChunk-pos)
		c := in.chunks[base]
		if need := pos - base + k; int64(len(c)) < need {
			c = append(c, make([]byte, need-int64(len(c)))...)
		}
		copy(c[pos-base:], p[i:i+k])
		in.chunks[base] = c
		i += k
	}
	if end := uint64(off) + uint64(len(p)); end > in.attr.Size {
		in.attr.Size = end
	}
	in.attr.Mtime = time.Now()
	return len(p), nil
}

func (t *twin) Fsync(ctx context.Context, ino fsys.Ino) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fsyncs++
	_, err := t.get(ino)
	return err
}

func (t *twin) StatFS(ctx context.Context, ino fsys.Ino) (fsys.StatFS, error) {
	return fsys.StatFS{BlockSize: 4096, Blocks: 1 << 30, BlocksFree: 1 << 29, Files: uint64(len(t.inodes)), NameMax: fsys.MaxName}, nil
}

func (t *twin) Notify(fn func(fsys.Invalidation)) {
	t.mu.Lock()
	t.notify = append(t.notify, fn)
	t.mu.Unlock()
}

// changeBehind changes a file's content as another node would, and
// notifies.
func (t *twin) changeBehind(ino fsys.Ino, data []byte) {
	t.mu.Lock()
	in := t.inodes[ino]
	in.chunks = map[int64][]byte{0: append([]byte(nil), data...)}
	in.attr.Size = uint64(len(data))
	fns := t.notify
	t.mu.Unlock()
	for _, fn := range fns {
		fn(fsys.Invalidation{Ino: ino})
	}
}
