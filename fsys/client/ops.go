package client

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

var (
	_ fsys.FS        = (*Client)(nil)
	_ fsys.Versioned = (*Client)(nil)
	_ fsys.Sharer    = (*Client)(nil)

	_ fsys.FileFlusher   = (*Client)(nil)
	_ fsys.FileCommitter = (*Client)(nil)
)

// InitVolume writes the root directory of a new, empty volume on h (with
// Grant = the volume path and a readcap of its key for this node). It is
// idempotent: on a volume whose root exists it only checks that this node
// can open it (ErrPermission otherwise).
func (c *Client) InitVolume(ctx context.Context, h fsys.Host, mode uint32) error {
	if mode&^07777 != 0 {
		return fmt.Errorf("fsys: init volume: mode %o: %w", mode, fsys.ErrInvalid)
	}
	info, err := h.Info(ctx)
	if err != nil {
		return fmt.Errorf("fsys: init volume: %w", err)
	}
	v, err := c.addVolume(ctx, h, info.Path)
	if err != nil {
		return err
	}
	recs, err := h.Get(ctx, 0, fsys.RecordKey{Ino: v.root})
	if err != nil {
		return fmt.Errorf("fsys: init volume: %w", err)
	}
	if len(recs) > 0 {
		if err := c.loadReadcaps(ctx, v); err != nil {
			return fmt.Errorf("fsys: init volume: %w", err)
		}
		_, _, err := c.inodeOf(ctx, v.root)
		return err
	}
	key := newKey()
	rc, err := caps.WrapKey(c.cfg.HostCert.Node, key, fsys.ReadcapPurpose(v.root))
	if err != nil {
		return fmt.Errorf("fsys: init volume: readcap: %w", err)
	}
	now := c.now().UnixNano()
	n := &inode{Kind: fsys.KindDir, Mode: mode, Nlink: 2, Mtime: now, Ctime: now, Atime: now,
		Owner: string(c.cfg.NodeID), Readers: []string{string(c.cfg.NodeID)}}
	_, err = c.updateDurable(ctx, v, "init", func(b *txb) error {
		b.touch(fsys.RecordKey{Ino: v.root}, 0)
		b.rc = []fsys.Readcap{{Ino: v.root, Reader: c.cfg.NodeID, Cap: rc.Marshal()}}
		b.learnKeys[v.root] = key
		return b.putInode(v.root, 0, v.path, n, key)
	})
	if errors.Is(err, fsys.ErrConflict) {
		return c.InitVolume(ctx, h, mode) // someone else made it
	}
	return err
}

// Getattr returns ino's attributes (with this client's pending writes).
func (c *Client) Getattr(ctx context.Context, ino fsys.Ino) (fsys.Attr, error) {
	if f := c.fileIfPending(ino); f != nil {
		if a, ok := f.attr(); ok {
			return a, nil
		}
	}
	_, ce, err := c.inodeOf(ctx, ino)
	if err != nil {
		return fsys.Attr{}, err
	}
	return attrOf(ino, ce.n, ce.rec.Version), nil
}

// Lookup finds name in directory dir.
func (c *Client) Lookup(ctx context.Context, dir fsys.Ino, name string) (fsys.Attr, error) {
	if err := validName(name); err != nil {
		return fsys.Attr{}, fmt.Errorf("fsys: lookup %q: %w", name, err)
	}
	in, ce, err := c.inodeOf(ctx, dir)
	if err != nil {
		return fsys.Attr{}, err
	}
	if ce.n.Kind != fsys.KindDir {
		return fsys.Attr{}, fmt.Errorf("fsys: lookup %q: %w", name, fsys.ErrNotDir)
	}
	_, ece, err := c.entryOf(ctx, in, dir, name)
	if err != nil {
		return fsys.Attr{}, err
	}
	if ece.rec == nil {
		return fsys.Attr{}, fmt.Errorf("fsys: lookup %q: %w", name, fsys.ErrNotExist)
	}
	return c.Getattr(ctx, ece.e.Ino)
}

// Readdir lists directory dir, sorted by name.
func (c *Client) Readdir(ctx context.Context, dir fsys.Ino) ([]fsys.DirEntry, error) {
	in, ce, err := c.inodeOf(ctx, dir)
	if err != nil {
		return nil, err
	}
	if ce.n.Kind != fsys.KindDir {
		return nil, fmt.Errorf("fsys: readdir: %w", fsys.ErrNotDir)
	}
	v := in.vol
	c.mu.Lock()
	l := v.lists[dir]
	watching := v.watching
	c.mu.Unlock()
	if l != nil && l.dirVer == ce.rec.Version && watching {
		return append([]fsys.DirEntry(nil), l.ents...), nil
	}
	recs, err := v.host.List(ctx, 0, dir)
	if err != nil {
		if errors.Is(err, fsys.ErrUnavailable) && l != nil {
			return append([]fsys.DirEntry(nil), l.ents...), nil
		}
		return nil, fmt.Errorf("fsys: readdir: %w", err)
	}
	ents, err := c.openEntries(v, in, dir, recs)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	v.lists[dir] = &listing{dirVer: ce.rec.Version, ents: ents}
	c.mu.Unlock()
	return append([]fsys.DirEntry(nil), ents...), nil
}

func (c *Client) openEntries(v *volume, in *inoInfo, dir fsys.Ino, recs []fsys.Record) ([]fsys.DirEntry, error) {
	key, err := c.keyOf(in, dir)
	if err != nil {
		return nil, err
	}
	ents := make([]fsys.DirEntry, 0, len(recs))
	for i := range recs {
		ce := &cached{rec: &recs[i]}
		if err := c.openEntryRec(v, key, recs[i].Key, ce, ""); err != nil {
			return nil, err
		}
		ents = append(ents, fsys.DirEntry{Name: ce.e.Name, Ino: ce.e.Ino, Kind: ce.e.Kind})
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	return ents, nil
}

// Readlink returns a symlink's target.
func (c *Client) Readlink(ctx context.Context, ino fsys.Ino) (string, error) {
	_, ce, err := c.inodeOf(ctx, ino)
	if err != nil {
		return "", err
	}
	if ce.n.Kind != fsys.KindSymlink {
		return "", fmt.Errorf("fsys: readlink: %w", fsys.ErrInvalid)
	}
	return ce.n.Target, nil
}

// StatFS reports fixed, generous numbers: a host's quota is not visible to
// clients yet.
func (c *Client) StatFS(ctx context.Context, ino fsys.Ino) (fsys.StatFS, error) {
	if _, err := c.info(ino); err != nil {
		return fsys.StatFS{}, err
	}
	return fsys.StatFS{BlockSize: 4096, Blocks: 1 << 30, BlocksFree: 1 << 30, Files: 1 << 32, NameMax: fsys.MaxName}, nil
}

func (c *Client) volOf(ino fsys.Ino) (*volume, error) {
	in, err := c.info(ino)
	if err != nil {
		return nil, err
	}
	return in.vol, nil
}

// mknod creates a child of dir (the body of Create, Mkdir, Symlink).
func (c *Client) mknod(ctx context.Context, op string, dir fsys.Ino, name string, n *inode, excl bool) (fsys.Attr, error) {
	if err := validName(name); err != nil {
		return fsys.Attr{}, fmt.Errorf("fsys: %s %q: %w", op, name, err)
	}
	v, err := c.volOf(dir)
	if err != nil {
		return fsys.Attr{}, err
	}
	ino, key := newIno(), newKey()
	var existing fsys.Ino
	ver, err := c.update(ctx, v, op, func(b *txb) error {
		existing = 0
		din, dn, err := b.dir(ctx, dir)
		if err != nil {
			return err
		}
		k, e, err := b.entry(ctx, din, dir, name)
		if err != nil {
			return err
		}
		if e != nil {
			if excl || n.Kind != fsys.KindFile {
				return fmt.Errorf("fsys: %s %q: %w", op, name, fsys.ErrExist)
			}
			if e.Kind == fsys.KindDir {
				return fmt.Errorf("fsys: %s %q: %w", op, name, fsys.ErrIsDir)
			}
			existing = e.Ino
			return nil
		}
		dkey, err := c.keyOf(din, dir)
		if err != nil {
			return err
		}
		now := c.now().UnixNano()
		n.Mtime, n.Ctime, n.Atime, n.Owner, n.Name = now, now, now, string(c.cfg.NodeID), name
		b.touch(fsys.RecordKey{Ino: ino}, 0)
		if err := b.putInode(ino, dir, paths.Path{}, n, key); err != nil {
			return err
		}
		if err := b.putEntry(dkey, k, &entry{Name: name, Ino: ino, Kind: n.Kind, Key: key}); err != nil {
			return err
		}
		dn.Size++
		if n.Kind == fsys.KindDir {
			dn.Nlink++
		}
		dn.Mtime, dn.Ctime = now, now
		b.learnKeys[ino] = key
		return b.putInode(dir, b.parents[dir], b.grants[dir], dn, dkey)
	})
	if err != nil {
		return fsys.Attr{}, err
	}
	if existing != 0 {
		return c.Getattr(ctx, existing)
	}
	return attrOf(ino, n, ver), nil
}

// Create makes a regular file (see FS).
func (c *Client) Create(ctx context.Context, dir fsys.Ino, name string, mode uint32, excl bool) (fsys.Attr, error) {
	if mode&^07777 != 0 {
		return fsys.Attr{}, fmt.Errorf("fsys: create: mode %o: %w", mode, fsys.ErrInvalid)
	}
	return c.mknod(ctx, "create", dir, name, &inode{Kind: fsys.KindFile, Mode: mode, Nlink: 1}, excl)
}

// Mkdir makes a directory.
func (c *Client) Mkdir(ctx context.Context, dir fsys.Ino, name string, mode uint32) (fsys.Attr, error) {
	if mode&^07777 != 0 {
		return fsys.Attr{}, fmt.Errorf("fsys: mkdir: mode %o: %w", mode, fsys.ErrInvalid)
	}
	return c.mknod(ctx, "mkdir", dir, name, &inode{Kind: fsys.KindDir, Mode: mode, Nlink: 2}, true)
}

// Symlink makes a symbolic link to target.
func (c *Client) Symlink(ctx context.Context, dir fsys.Ino, name, target string) (fsys.Attr, error) {
	if target == "" || len(target) > fsys.MaxTargetLen {
		return fsys.Attr{}, fmt.Errorf("fsys: symlink: target of %d bytes: %w", len(target), fsys.ErrInvalid)
	}
	return c.mknod(ctx, "symlink", dir, name, &inode{Kind: fsys.KindSymlink, Mode: 0o777, Nlink: 1, Target: target, Size: uint64(len(target))}, true)
}

// remove is Unlink and Rmdir.
func (c *Client) remove(ctx context.Context, op string, dir fsys.Ino, name string, wantDir bool) error {
	v, err := c.volOf(dir)
	if err != nil {
		return err
	}
	var gone fsys.Ino
	var before uint64
	_, err = c.update(ctx, v, op, func(b *txb) error {
		din, dn, err := b.dir(ctx, dir)
		if err != nil {
			return err
		}
		k, e, err := b.entry(ctx, din, dir, name)
		if err != nil {
			return err
		}
		if e == nil {
			return fmt.Errorf("fsys: %s %q: %w", op, name, fsys.ErrNotExist)
		}
		if wantDir && e.Kind != fsys.KindDir {
			return fmt.Errorf("fsys: %s %q: %w", op, name, fsys.ErrNotDir)
		}
		if !wantDir && e.Kind == fsys.KindDir {
			return fmt.Errorf("fsys: %s %q: %w", op, name, fsys.ErrIsDir)
		}
		_, cn, cver, err := b.inode(ctx, e.Ino)
		if err != nil && !errors.Is(err, fsys.ErrNotExist) {
			return err
		}
		if wantDir && cn != nil {
			recs, err := v.host.List(ctx, 0, e.Ino)
			if err != nil {
				return err
			}
			if len(recs) > 0 || cn.Size > 0 {
				return fmt.Errorf("fsys: %s %q: %w", op, name, fsys.ErrNotEmpty)
			}
		}
		dkey, err := c.keyOf(din, dir)
		if err != nil {
			return err
		}
		b.delete(k)
		if cn != nil {
			b.delete(fsys.RecordKey{Ino: e.Ino})
		}
		now := c.now().UnixNano()
		if dn.Size > 0 {
			dn.Size--
		}
		if wantDir && dn.Nlink > 2 {
			dn.Nlink--
		}
		dn.Mtime, dn.Ctime = now, now
		gone, before = e.Ino, cver
		return b.putInode(dir, b.parents[dir], b.grants[dir], dn, dkey)
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	if in := c.inos[gone]; in != nil && before != 0 {
		in.unlinked = before
	}
	c.mu.Unlock()
	c.dropFile(gone)
	return nil
}

// Unlink removes a file or symlink. An open file stays readable by this
// client (from the version before the unlink); writes to it fail.
func (c *Client) Unlink(ctx context.Context, dir fsys.Ino, name string) error {
	return c.remove(ctx, "unlink", dir, name, false)
}

// Rmdir removes an empty directory.
func (c *Client) Rmdir(ctx context.Context, dir fsys.Ino, name string) error {
	return c.remove(ctx, "rmdir", dir, name, true)
}

// Rename moves dir/name to newDir/newName (see FS and RenameFlags).
func (c *Client) Rename(ctx context.Context, dir fsys.Ino, name string, newDir fsys.Ino, newName string, flags fsys.RenameFlags) error {
	if err := checkRenameArgs(name, newName, flags); err != nil {
		return err
	}
	v, err := c.volOf(dir)
	if err != nil {
		return err
	}
	v2, err := c.volOf(newDir)
	if err != nil {
		return err
	}
	if v != v2 {
		return fmt.Errorf("fsys: rename: %w", fsys.ErrCrossVolume)
	}
	if dir == newDir && name == newName {
		_, err := c.Lookup(ctx, dir, name)
		return err
	}
	var op *renameOp
	// Durable at once: rename is how programs replace a file atomically
	// (write, fsync, rename, fsync the directory), and package fuse does
	// not forward a directory's fsync yet (docs/fs.md, "Durability").
	_, err = c.updateDurable(ctx, v, "rename", func(b *txb) error {
		op = &renameOp{c: c, v: v, b: b, dir: dir, name: name, newDir: newDir, newName: newName, flags: flags}
		return op.build(ctx)
	})
	if err != nil {
		return err
	}
	if op != nil {
		c.forgetReplaced(op.replaced, op.replacedVer)
	}
	return nil
}

// checkRenameArgs checks Rename's flags and names.
func checkRenameArgs(name, newName string, flags fsys.RenameFlags) error {
	if flags&^(fsys.RenameNoReplace|fsys.RenameExchange) != 0 || flags == fsys.RenameNoReplace|fsys.RenameExchange {
		return fmt.Errorf("fsys: rename: flags %#x: %w", flags, fsys.ErrInvalid)
	}
	for _, n := range []string{name, newName} {
		if err := validName(n); err != nil {
			return fmt.Errorf("fsys: rename %q: %w", n, err)
		}
	}
	return nil
}

// forgetReplaced marks the inode a rename replaced (0: none) unlinked as
// of its version ver, so that open files read that version, and drops its
// write-back state.
func (c *Client) forgetReplaced(ino fsys.Ino, ver uint64) {
	if ino == 0 {
		return
	}
	c.mu.Lock()
	if in := c.inos[ino]; in != nil && ver != 0 {
		in.unlinked = ver
	}
	c.mu.Unlock()
	c.dropFile(ino)
}

// renameOp is one attempt at a Rename's Tx (updateDurable retries on a
// conflict with a fresh one): it reads the source s and target t
// directories and entries, checks the flags and the tree, and changes the
// entries, the moved inodes and both directories.
type renameOp struct {
	c             *Client
	v             *volume
	b             *txb
	dir, newDir   fsys.Ino
	name, newName string
	flags         fsys.RenameFlags
	now           int64
	sin, tin      *inoInfo
	sdn, tdn      *inode         // the directories
	sk, tk        fsys.RecordKey // the entries' keys
	se, te        *entry         // the entries (te nil: no target)
	skey, tkey    []byte         // the directories' keys
	replaced      fsys.Ino       // the inode the rename replaced (0: none)
	replacedVer   uint64
}

// build adds the rename to the Tx.
func (r *renameOp) build(ctx context.Context) error {
	if err := r.load(ctx); err != nil {
		return err
	}
	if r.te != nil && r.te.Ino == r.se.Ino {
		return nil // hard links do not exist: same inode, same entry
	}
	if err := r.check(ctx); err != nil {
		return err
	}
	var err error
	if r.skey, err = r.c.keyOf(r.sin, r.dir); err != nil {
		return err
	}
	if r.tkey, err = r.c.keyOf(r.tin, r.newDir); err != nil {
		return err
	}
	r.now = r.c.now().UnixNano()
	if r.flags&fsys.RenameExchange != 0 {
		err = r.exchange(ctx)
	} else {
		err = r.replace(ctx)
	}
	if err != nil {
		return err
	}
	return r.touchDirs()
}

// load reads both directories and both entries; the source must exist.
func (r *renameOp) load(ctx context.Context) error {
	var err error
	if r.sin, r.sdn, err = r.b.dir(ctx, r.dir); err != nil {
		return err
	}
	r.tin, r.tdn = r.sin, r.sdn
	if r.newDir != r.dir {
		if r.tin, r.tdn, err = r.b.dir(ctx, r.newDir); err != nil {
			return err
		}
	}
	if r.sk, r.se, err = r.b.entry(ctx, r.sin, r.dir, r.name); err != nil {
		return err
	}
	if r.se == nil {
		return fmt.Errorf("fsys: rename %q: %w", r.name, fsys.ErrNotExist)
	}
	r.tk, r.te, err = r.b.entry(ctx, r.tin, r.newDir, r.newName)
	return err
}

// check applies the flags to the target and keeps a directory out of its
// own subtree.
func (r *renameOp) check(ctx context.Context) error {
	if r.flags&fsys.RenameNoReplace != 0 && r.te != nil {
		return fmt.Errorf("fsys: rename to %q: %w", r.newName, fsys.ErrExist)
	}
	if r.flags&fsys.RenameExchange != 0 && r.te == nil {
		return fmt.Errorf("fsys: exchange with %q: %w", r.newName, fsys.ErrNotExist)
	}
	if r.newDir != r.dir {
		return r.c.checkNotUnder(ctx, r.b, r.newDir, r.se.Ino, r.te)
	}
	return nil
}

// exchange swaps the two entries' inodes and moves each inode to the
// other's directory.
func (r *renameOp) exchange(ctx context.Context) error {
	se, te := r.se, r.te
	if err := r.b.putEntry(r.tkey, r.tk, &entry{Name: r.newName, Ino: se.Ino, Kind: se.Kind, Key: se.Key}); err != nil {
		return err
	}
	if err := r.b.putEntry(r.skey, r.sk, &entry{Name: r.name, Ino: te.Ino, Kind: te.Kind, Key: te.Key}); err != nil {
		return err
	}
	if err := r.moveInode(ctx, se, r.newDir, r.newName); err != nil {
		return err
	}
	if err := r.moveInode(ctx, te, r.dir, r.name); err != nil {
		return err
	}
	if r.newDir != r.dir && se.Kind != te.Kind {
		if se.Kind == fsys.KindDir {
			r.sdn.Nlink--
			r.tdn.Nlink++
		} else if te.Kind == fsys.KindDir {
			r.sdn.Nlink++
			r.tdn.Nlink--
		}
	}
	return nil
}

// replace moves the source entry to the target name, removing the
// target's inode first if there is one.
func (r *renameOp) replace(ctx context.Context) error {
	se := r.se
	if r.te != nil {
		if err := r.removeTarget(ctx); err != nil {
			return err
		}
	}
	r.b.delete(r.sk)
	if err := r.b.putEntry(r.tkey, r.tk, &entry{Name: r.newName, Ino: se.Ino, Kind: se.Kind, Key: se.Key}); err != nil {
		return err
	}
	if err := r.moveInode(ctx, se, r.newDir, r.newName); err != nil {
		return err
	}
	if r.sdn.Size > 0 {
		r.sdn.Size--
	}
	r.tdn.Size++
	if se.Kind == fsys.KindDir && r.newDir != r.dir {
		r.sdn.Nlink--
		r.tdn.Nlink++
	}
	return nil
}

// removeTarget deletes the inode the rename replaces: a file onto a file,
// or a directory onto an empty directory.
func (r *renameOp) removeTarget(ctx context.Context) error {
	se, te := r.se, r.te
	if se.Kind == fsys.KindDir && te.Kind != fsys.KindDir {
		return fmt.Errorf("fsys: rename onto %q: %w", r.newName, fsys.ErrNotDir)
	}
	if se.Kind != fsys.KindDir && te.Kind == fsys.KindDir {
		return fmt.Errorf("fsys: rename onto %q: %w", r.newName, fsys.ErrIsDir)
	}
	_, tn, tver, err := r.b.inode(ctx, te.Ino)
	if err != nil && !errors.Is(err, fsys.ErrNotExist) {
		return err
	}
	if te.Kind == fsys.KindDir && tn != nil {
		recs, err := r.v.host.List(ctx, 0, te.Ino)
		if err != nil {
			return err
		}
		if len(recs) > 0 || tn.Size > 0 {
			return fmt.Errorf("fsys: rename onto %q: %w", r.newName, fsys.ErrNotEmpty)
		}
	}
	if tn != nil {
		r.b.delete(fsys.RecordKey{Ino: te.Ino})
	}
	r.replaced, r.replacedVer = te.Ino, tver
	if r.tdn.Size > 0 {
		r.tdn.Size--
	}
	if te.Kind == fsys.KindDir {
		r.tdn.Nlink--
	}
	return nil
}

// moveInode rewrites e's inode under directory to with its new name.
func (r *renameOp) moveInode(ctx context.Context, e *entry, to fsys.Ino, newName string) error {
	_, cn, _, err := r.b.inode(ctx, e.Ino)
	if err != nil {
		return err
	}
	cn.Name, cn.Ctime = newName, r.now
	return r.b.putInode(e.Ino, to, r.b.grants[e.Ino], cn, e.Key)
}

// touchDirs writes both directories with their new times.
func (r *renameOp) touchDirs() error {
	b := r.b
	r.sdn.Mtime, r.sdn.Ctime = r.now, r.now
	if err := b.putInode(r.dir, b.parents[r.dir], b.grants[r.dir], r.sdn, r.skey); err != nil {
		return err
	}
	if r.newDir != r.dir {
		r.tdn.Mtime, r.tdn.Ctime = r.now, r.now
		return b.putInode(r.newDir, b.parents[r.newDir], b.grants[r.newDir], r.tdn, r.tkey)
	}
	return nil
}

// checkNotUnder refuses to move ino (or, in an exchange, te) into its own
// subtree: it walks from dest up through Parent.
func (c *Client) checkNotUnder(ctx context.Context, b *txb, dest, ino fsys.Ino, te *entry) error {
	for cur, depth := dest, 0; cur != 0 && depth < 4096; depth++ {
		if cur == ino || (te != nil && te.Kind == fsys.KindDir && cur == te.Ino) {
			return fmt.Errorf("fsys: rename: a directory cannot move under itself: %w", fsys.ErrInvalid)
		}
		if p, ok := b.parents[cur]; ok {
			cur = p
			continue
		}
		_, ce, err := c.inodeOf(ctx, cur)
		if err != nil {
			return err
		}
		cur = ce.rec.Parent
	}
	return nil
}

// Setattr changes mode, size (files) and times.
func (c *Client) Setattr(ctx context.Context, ino fsys.Ino, sa fsys.SetAttr) (fsys.Attr, error) {
	if sa.Mode != nil && *sa.Mode&^07777 != 0 {
		return fsys.Attr{}, fmt.Errorf("fsys: setattr: mode %o: %w", *sa.Mode, fsys.ErrInvalid)
	}
	_, ce, err := c.inodeOf(ctx, ino)
	if err != nil {
		return fsys.Attr{}, err
	}
	if ce.n.Kind == fsys.KindFile {
		f, err := c.file(ctx, ino)
		if err != nil {
			return fsys.Attr{}, err
		}
		if err := f.setattr(ctx, sa); err != nil {
			return fsys.Attr{}, err
		}
		if err := f.sync(ctx, false); err != nil {
			return fsys.Attr{}, err
		}
		return c.Getattr(ctx, ino)
	}
	if sa.Size != nil {
		if ce.n.Kind == fsys.KindDir {
			return fsys.Attr{}, fmt.Errorf("fsys: truncate: %w", fsys.ErrIsDir)
		}
		return fsys.Attr{}, fmt.Errorf("fsys: truncate: %w", fsys.ErrInvalid)
	}
	v, err := c.volOf(ino)
	if err != nil {
		return fsys.Attr{}, err
	}
	_, err = c.update(ctx, v, "setattr", func(b *txb) error {
		in, n, _, err := b.inode(ctx, ino)
		if err != nil {
			return err
		}
		applyAttrs(n, sa, c.now().UnixNano())
		key, err := c.keyOf(in, ino)
		if err != nil {
			return err
		}
		return b.putInode(ino, b.parents[ino], b.grants[ino], n, key)
	})
	if err != nil {
		return fsys.Attr{}, err
	}
	return c.Getattr(ctx, ino)
}

func applyAttrs(n *inode, sa fsys.SetAttr, now int64) {
	if sa.Mode != nil {
		n.Mode = *sa.Mode
	}
	if sa.Mtime != nil {
		n.Mtime = sa.Mtime.UnixNano()
	}
	if sa.Atime != nil {
		n.Atime = sa.Atime.UnixNano()
	}
	n.Ctime = now
}
