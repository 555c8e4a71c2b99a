package fsys

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
)

var (
	_ FS        = (*Client)(nil)
	_ Versioned = (*Client)(nil)
	_ Sharer    = (*Client)(nil)
)

// InitVolume writes the root directory of a new, empty volume on h (with
// Grant = the volume path and a readcap of its key for this node). It is
// idempotent: on a volume whose root exists it only checks that this node
// can open it (ErrPermission otherwise).
func (c *Client) InitVolume(ctx context.Context, h Host, mode uint32) error {
	if mode&^07777 != 0 {
		return fmt.Errorf("fsys: init volume: mode %o: %w", mode, ErrInvalid)
	}
	info, err := h.Info(ctx)
	if err != nil {
		return fmt.Errorf("fsys: init volume: %w", err)
	}
	v, err := c.addVolume(ctx, h, info.Path)
	if err != nil {
		return err
	}
	recs, err := h.Get(ctx, 0, RecordKey{Ino: v.root})
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
	rc, err := caps.WrapKey(c.cfg.HostCert.Node, key, ReadcapPurpose(v.root))
	if err != nil {
		return fmt.Errorf("fsys: init volume: readcap: %w", err)
	}
	now := c.now().UnixNano()
	n := &inode{Kind: KindDir, Mode: mode, Nlink: 2, Mtime: now, Ctime: now, Atime: now,
		Owner: string(c.cfg.NodeID), Readers: []string{string(c.cfg.NodeID)}}
	_, err = c.updateDurable(ctx, v, "init", func(b *txb) error {
		b.touch(RecordKey{Ino: v.root}, 0)
		b.rc = []Readcap{{Ino: v.root, Reader: c.cfg.NodeID, Cap: rc.Marshal()}}
		b.learnKeys[v.root] = key
		return b.putInode(v.root, 0, v.path, n, key)
	})
	if errors.Is(err, ErrConflict) {
		return c.InitVolume(ctx, h, mode) // someone else made it
	}
	return err
}

// Getattr returns ino's attributes (with this client's pending writes).
func (c *Client) Getattr(ctx context.Context, ino Ino) (Attr, error) {
	if f := c.fileIfPending(ino); f != nil {
		if a, ok := f.attr(); ok {
			return a, nil
		}
	}
	_, ce, err := c.inodeOf(ctx, ino)
	if err != nil {
		return Attr{}, err
	}
	return attrOf(ino, ce.n, ce.rec.Version), nil
}

// Lookup finds name in directory dir.
func (c *Client) Lookup(ctx context.Context, dir Ino, name string) (Attr, error) {
	if err := validName(name); err != nil {
		return Attr{}, fmt.Errorf("fsys: lookup %q: %w", name, err)
	}
	in, ce, err := c.inodeOf(ctx, dir)
	if err != nil {
		return Attr{}, err
	}
	if ce.n.Kind != KindDir {
		return Attr{}, fmt.Errorf("fsys: lookup %q: %w", name, ErrNotDir)
	}
	_, ece, err := c.entryOf(ctx, in, dir, name)
	if err != nil {
		return Attr{}, err
	}
	if ece.rec == nil {
		return Attr{}, fmt.Errorf("fsys: lookup %q: %w", name, ErrNotExist)
	}
	return c.Getattr(ctx, ece.e.Ino)
}

// Readdir lists directory dir, sorted by name.
func (c *Client) Readdir(ctx context.Context, dir Ino) ([]DirEntry, error) {
	in, ce, err := c.inodeOf(ctx, dir)
	if err != nil {
		return nil, err
	}
	if ce.n.Kind != KindDir {
		return nil, fmt.Errorf("fsys: readdir: %w", ErrNotDir)
	}
	v := in.vol
	c.mu.Lock()
	l := v.lists[dir]
	watching := v.watching
	c.mu.Unlock()
	if l != nil && l.dirVer == ce.rec.Version && watching {
		return append([]DirEntry(nil), l.ents...), nil
	}
	recs, err := v.host.List(ctx, 0, dir)
	if err != nil {
		if errors.Is(err, ErrUnavailable) && l != nil {
			return append([]DirEntry(nil), l.ents...), nil
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
	return append([]DirEntry(nil), ents...), nil
}

func (c *Client) openEntries(v *volume, in *inoInfo, dir Ino, recs []Record) ([]DirEntry, error) {
	key, err := c.keyOf(in, dir)
	if err != nil {
		return nil, err
	}
	ents := make([]DirEntry, 0, len(recs))
	for i := range recs {
		ce := &cached{rec: &recs[i]}
		if err := c.openEntryRec(v, key, recs[i].Key, ce, ""); err != nil {
			return nil, err
		}
		ents = append(ents, DirEntry{Name: ce.e.Name, Ino: ce.e.Ino, Kind: ce.e.Kind})
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	return ents, nil
}

// Readlink returns a symlink's target.
func (c *Client) Readlink(ctx context.Context, ino Ino) (string, error) {
	_, ce, err := c.inodeOf(ctx, ino)
	if err != nil {
		return "", err
	}
	if ce.n.Kind != KindSymlink {
		return "", fmt.Errorf("fsys: readlink: %w", ErrInvalid)
	}
	return ce.n.Target, nil
}

// StatFS reports fixed, generous numbers: a host's quota is not visible to
// clients yet.
func (c *Client) StatFS(ctx context.Context, ino Ino) (StatFS, error) {
	if _, err := c.info(ino); err != nil {
		return StatFS{}, err
	}
	return StatFS{BlockSize: 4096, Blocks: 1 << 30, BlocksFree: 1 << 30, Files: 1 << 32, NameMax: MaxName}, nil
}

func (c *Client) volOf(ino Ino) (*volume, error) {
	in, err := c.info(ino)
	if err != nil {
		return nil, err
	}
	return in.vol, nil
}

// mknod creates a child of dir (the body of Create, Mkdir, Symlink).
func (c *Client) mknod(ctx context.Context, op string, dir Ino, name string, n *inode, excl bool) (Attr, error) {
	if err := validName(name); err != nil {
		return Attr{}, fmt.Errorf("fsys: %s %q: %w", op, name, err)
	}
	v, err := c.volOf(dir)
	if err != nil {
		return Attr{}, err
	}
	ino, key := newIno(), newKey()
	var existing Ino
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
			if excl || n.Kind != KindFile {
				return fmt.Errorf("fsys: %s %q: %w", op, name, ErrExist)
			}
			if e.Kind == KindDir {
				return fmt.Errorf("fsys: %s %q: %w", op, name, ErrIsDir)
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
		b.touch(RecordKey{Ino: ino}, 0)
		if err := b.putInode(ino, dir, paths.Path{}, n, key); err != nil {
			return err
		}
		if err := b.putEntry(dkey, k, &entry{Name: name, Ino: ino, Kind: n.Kind, Key: key}); err != nil {
			return err
		}
		dn.Size++
		if n.Kind == KindDir {
			dn.Nlink++
		}
		dn.Mtime, dn.Ctime = now, now
		b.learnKeys[ino] = key
		return b.putInode(dir, b.parents[dir], b.grants[dir], dn, dkey)
	})
	if err != nil {
		return Attr{}, err
	}
	if existing != 0 {
		return c.Getattr(ctx, existing)
	}
	return attrOf(ino, n, ver), nil
}

// Create makes a regular file (see FS).
func (c *Client) Create(ctx context.Context, dir Ino, name string, mode uint32, excl bool) (Attr, error) {
	if mode&^07777 != 0 {
		return Attr{}, fmt.Errorf("fsys: create: mode %o: %w", mode, ErrInvalid)
	}
	return c.mknod(ctx, "create", dir, name, &inode{Kind: KindFile, Mode: mode, Nlink: 1}, excl)
}

// Mkdir makes a directory.
func (c *Client) Mkdir(ctx context.Context, dir Ino, name string, mode uint32) (Attr, error) {
	if mode&^07777 != 0 {
		return Attr{}, fmt.Errorf("fsys: mkdir: mode %o: %w", mode, ErrInvalid)
	}
	return c.mknod(ctx, "mkdir", dir, name, &inode{Kind: KindDir, Mode: mode, Nlink: 2}, true)
}

// Symlink makes a symbolic link to target.
func (c *Client) Symlink(ctx context.Context, dir Ino, name, target string) (Attr, error) {
	if target == "" || len(target) > MaxTargetLen {
		return Attr{}, fmt.Errorf("fsys: symlink: target of %d bytes: %w", len(target), ErrInvalid)
	}
	return c.mknod(ctx, "symlink", dir, name, &inode{Kind: KindSymlink, Mode: 0o777, Nlink: 1, Target: target, Size: uint64(len(target))}, true)
}

// remove is Unlink and Rmdir.
func (c *Client) remove(ctx context.Context, op string, dir Ino, name string, wantDir bool) error {
	v, err := c.volOf(dir)
	if err != nil {
		return err
	}
	var gone Ino
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
			return fmt.Errorf("fsys: %s %q: %w", op, name, ErrNotExist)
		}
		if wantDir && e.Kind != KindDir {
			return fmt.Errorf("fsys: %s %q: %w", op, name, ErrNotDir)
		}
		if !wantDir && e.Kind == KindDir {
			return fmt.Errorf("fsys: %s %q: %w", op, name, ErrIsDir)
		}
		_, cn, cver, err := b.inode(ctx, e.Ino)
		if err != nil && !errors.Is(err, ErrNotExist) {
			return err
		}
		if wantDir && cn != nil {
			recs, err := v.host.List(ctx, 0, e.Ino)
			if err != nil {
				return err
			}
			if len(recs) > 0 || cn.Size > 0 {
				return fmt.Errorf("fsys: %s %q: %w", op, name, ErrNotEmpty)
			}
		}
		dkey, err := c.keyOf(din, dir)
		if err != nil {
			return err
		}
		b.delete(k)
		if cn != nil {
			b.delete(RecordKey{Ino: e.Ino})
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
func (c *Client) Unlink(ctx context.Context, dir Ino, name string) error {
	return c.remove(ctx, "unlink", dir, name, false)
}

// Rmdir removes an empty directory.
func (c *Client) Rmdir(ctx context.Context, dir Ino, name string) error {
	return c.remove(ctx, "rmdir", dir, name, true)
}

// Rename moves dir/name to newDir/newName (see FS and RenameFlags).
func (c *Client) Rename(ctx context.Context, dir Ino, name string, newDir Ino, newName string, flags RenameFlags) error {
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return fmt.Errorf("fsys: rename: flags %#x: %w", flags, ErrInvalid)
	}
	for _, n := range []string{name, newName} {
		if err := validName(n); err != nil {
			return fmt.Errorf("fsys: rename %q: %w", n, err)
		}
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
		return fmt.Errorf("fsys: rename: %w", ErrCrossVolume)
	}
	if dir == newDir && name == newName {
		_, err := c.Lookup(ctx, dir, name)
		return err
	}
	var replaced Ino
	var replacedVer uint64
	// Durable at once: rename is how programs replace a file atomically
	// (write, fsync, rename, fsync the directory), and package fuse does
	// not forward a directory's fsync yet (docs/fs.md, "Durability").
	_, err = c.updateDurable(ctx, v, "rename", func(b *txb) error {
		replaced = 0
		sin, sdn, err := b.dir(ctx, dir)
		if err != nil {
			return err
		}
		tin, tdn := sin, sdn
		if newDir != dir {
			if tin, tdn, err = b.dir(ctx, newDir); err != nil {
				return err
			}
		}
		sk, se, err := b.entry(ctx, sin, dir, name)
		if err != nil {
			return err
		}
		if se == nil {
			return fmt.Errorf("fsys: rename %q: %w", name, ErrNotExist)
		}
		tk, te, err := b.entry(ctx, tin, newDir, newName)
		if err != nil {
			return err
		}
		if te != nil && te.Ino == se.Ino {
			return nil // hard links do not exist: same inode, same entry
		}
		if flags&RenameNoReplace != 0 && te != nil {
			return fmt.Errorf("fsys: rename to %q: %w", newName, ErrExist)
		}
		if flags&RenameExchange != 0 && te == nil {
			return fmt.Errorf("fsys: exchange with %q: %w", newName, ErrNotExist)
		}
		// A directory may not move into its own subtree.
		if newDir != dir {
			if err := c.checkNotUnder(ctx, b, newDir, se.Ino, te); err != nil {
				return err
			}
		}
		skey, err := c.keyOf(sin, dir)
		if err != nil {
			return err
		}
		tkey, err := c.keyOf(tin, newDir)
		if err != nil {
			return err
		}
		now := c.now().UnixNano()
		move := func(e *entry, from, to Ino, newName string) error {
			_, cn, _, err := b.inode(ctx, e.Ino)
			if err != nil {
				return err
			}
			cn.Name, cn.Ctime = newName, now
			ckey := e.Key
			return b.putInode(e.Ino, to, b.grants[e.Ino], cn, ckey)
		}
		if flags&RenameExchange != 0 {
			if err := b.putEntry(tkey, tk, &entry{Name: newName, Ino: se.Ino, Kind: se.Kind, Key: se.Key}); err != nil {
				return err
			}
			if err := b.putEntry(skey, sk, &entry{Name: name, Ino: te.Ino, Kind: te.Kind, Key: te.Key}); err != nil {
				return err
			}
			if err := move(se, dir, newDir, newName); err != nil {
				return err
			}
			if err := move(te, newDir, dir, name); err != nil {
				return err
			}
			if newDir != dir && se.Kind != te.Kind {
				if se.Kind == KindDir {
					sdn.Nlink--
					tdn.Nlink++
				} else if te.Kind == KindDir {
					sdn.Nlink++
					tdn.Nlink--
				}
			}
		} else {
			if te != nil {
				if se.Kind == KindDir && te.Kind != KindDir {
					return fmt.Errorf("fsys: rename onto %q: %w", newName, ErrNotDir)
				}
				if se.Kind != KindDir && te.Kind == KindDir {
					return fmt.Errorf("fsys: rename onto %q: %w", newName, ErrIsDir)
				}
				_, tn, tver, err := b.inode(ctx, te.Ino)
				if err != nil && !errors.Is(err, ErrNotExist) {
					return err
				}
				if te.Kind == KindDir && tn != nil {
					recs, err := v.host.List(ctx, 0, te.Ino)
					if err != nil {
						return err
					}
					if len(recs) > 0 || tn.Size > 0 {
						return fmt.Errorf("fsys: rename onto %q: %w", newName, ErrNotEmpty)
					}
				}
				if tn != nil {
					b.delete(RecordKey{Ino: te.Ino})
				}
				replaced, replacedVer = te.Ino, tver
				if tdn.Size > 0 {
					tdn.Size--
				}
				if te.Kind == KindDir {
					tdn.Nlink--
				}
			}
			b.delete(sk)
			if err := b.putEntry(tkey, tk, &entry{Name: newName, Ino: se.Ino, Kind: se.Kind, Key: se.Key}); err != nil {
				return err
			}
			if err := move(se, dir, newDir, newName); err != nil {
				return err
			}
			if sdn.Size > 0 {
				sdn.Size--
			}
			tdn.Size++
			if se.Kind == KindDir && newDir != dir {
				sdn.Nlink--
				tdn.Nlink++
			}
		}
		sdn.Mtime, sdn.Ctime = now, now
		if err := b.putInode(dir, b.parents[dir], b.grants[dir], sdn, skey); err != nil {
			return err
		}
		if newDir != dir {
			tdn.Mtime, tdn.Ctime = now, now
			return b.putInode(newDir, b.parents[newDir], b.grants[newDir], tdn, tkey)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if replaced != 0 {
		c.mu.Lock()
		if in := c.inos[replaced]; in != nil && replacedVer != 0 {
			in.unlinked = replacedVer
		}
		c.mu.Unlock()
		c.dropFile(replaced)
	}
	return nil
}

// checkNotUnder refuses to move ino (or, in an exchange, te) into its own
// subtree: it walks from dest up through Parent.
func (c *Client) checkNotUnder(ctx context.Context, b *txb, dest, ino Ino, te *entry) error {
	for cur, depth := dest, 0; cur != 0 && depth < 4096; depth++ {
		if cur == ino || (te != nil && te.Kind == KindDir && cur == te.Ino) {
			return fmt.Errorf("fsys: rename: a directory cannot move under itself: %w", ErrInvalid)
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
func (c *Client) Setattr(ctx context.Context, ino Ino, sa SetAttr) (Attr, error) {
	if sa.Mode != nil && *sa.Mode&^07777 != 0 {
		return Attr{}, fmt.Errorf("fsys: setattr: mode %o: %w", *sa.Mode, ErrInvalid)
	}
	_, ce, err := c.inodeOf(ctx, ino)
	if err != nil {
		return Attr{}, err
	}
	if ce.n.Kind == KindFile {
		f, err := c.file(ctx, ino)
		if err != nil {
			return Attr{}, err
		}
		if err := f.setattr(ctx, sa); err != nil {
			return Attr{}, err
		}
		if err := f.sync(ctx, false); err != nil {
			return Attr{}, err
		}
		return c.Getattr(ctx, ino)
	}
	if sa.Size != nil {
		if ce.n.Kind == KindDir {
			return Attr{}, fmt.Errorf("fsys: truncate: %w", ErrIsDir)
		}
		return Attr{}, fmt.Errorf("fsys: truncate: %w", ErrInvalid)
	}
	v, err := c.volOf(ino)
	if err != nil {
		return Attr{}, err
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
		return Attr{}, err
	}
	return c.Getattr(ctx, ino)
}

func applyAttrs(n *inode, sa SetAttr, now int64) {
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
