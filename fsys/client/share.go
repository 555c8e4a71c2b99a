package client

import (
	"context"
	"fmt"
	"slices"
	"time"

	"blocktree.dev/bt/fsys"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
)

// ---- versions ----

// Log lists the versions that changed the inode at p, newest first.
func (c *Client) Log(ctx context.Context, p paths.Path, limit int) ([]fsys.LogEntry, error) {
	ino, err := c.walk(ctx, p)
	if err != nil {
		return nil, err
	}
	v, err := c.volOf(ino)
	if err != nil {
		return nil, err
	}
	return v.host.Log(ctx, fsys.RecordKey{Ino: ino}, limit)
}

// walkAt resolves p as of version at, with the keys the entries of that
// version carry (the volume root's key is the current one: versions from
// before a re-key of the root are not readable).
func (c *Client) walkAt(ctx context.Context, p paths.Path, at uint64) (*volume, fsys.Ino, []byte, *inode, uint64, error) {
	if at == 0 {
		return nil, 0, nil, nil, 0, fmt.Errorf("fsys: version 0: %w", fsys.ErrInvalid)
	}
	v, err := c.volumeOf(ctx, p)
	if err != nil {
		return nil, 0, nil, nil, 0, err
	}
	rel, err := v.path.Rel(p)
	if err != nil {
		return nil, 0, nil, nil, 0, fmt.Errorf("fsys: %s: %w", p, fsys.ErrNotExist)
	}
	if _, err := c.walk(ctx, v.path); err != nil {
		return nil, 0, nil, nil, 0, err
	}
	in, err := c.info(v.root)
	if err != nil {
		return nil, 0, nil, nil, 0, err
	}
	key, err := c.keyOf(in, v.root)
	if err != nil {
		return nil, 0, nil, nil, 0, err
	}
	ino := v.root
	for i := 0; ; i++ {
		recs, err := v.host.Get(ctx, at, fsys.RecordKey{Ino: ino})
		if err != nil {
			return nil, 0, nil, nil, 0, err
		}
		if len(recs) == 0 {
			return nil, 0, nil, nil, 0, fmt.Errorf("fsys: %s at version %d: %w", p, at, fsys.ErrNotExist)
		}
		n, err := openInode(key, ino, recs[0].Sealed)
		if err != nil {
			return nil, 0, nil, nil, 0, fmt.Errorf("fsys: %s at version %d: %w", p, at, err)
		}
		if i == len(rel) {
			return v, ino, key, n, recs[0].Version, nil
		}
		if n.Kind != fsys.KindDir {
			return nil, 0, nil, nil, 0, fmt.Errorf("fsys: %s: %w", p, fsys.ErrNotDir)
		}
		k := fsys.RecordKey{Ino: ino, Name: nameMAC(nameKey(key), rel[i])}
		erecs, err := v.host.Get(ctx, at, k)
		if err != nil {
			return nil, 0, nil, nil, 0, err
		}
		if len(erecs) == 0 {
			return nil, 0, nil, nil, 0, fmt.Errorf("fsys: %s at version %d: %w", p, at, fsys.ErrNotExist)
		}
		e, err := openEntry(key, k, erecs[0].Sealed)
		if err != nil {
			return nil, 0, nil, nil, 0, err
		}
		ino, key = e.Ino, e.Key
	}
}

// GetattrAt returns the attributes of p as of version v.
func (c *Client) GetattrAt(ctx context.Context, p paths.Path, at uint64) (fsys.Attr, error) {
	_, ino, _, n, ver, err := c.walkAt(ctx, p, at)
	if err != nil {
		return fsys.Attr{}, err
	}
	return attrOf(ino, n, ver), nil
}

// ReaddirAt lists directory p as of version v.
func (c *Client) ReaddirAt(ctx context.Context, p paths.Path, at uint64) ([]fsys.DirEntry, error) {
	v, ino, key, n, _, err := c.walkAt(ctx, p, at)
	if err != nil {
		return nil, err
	}
	if n.Kind != fsys.KindDir {
		return nil, fmt.Errorf("fsys: readdir %s: %w", p, fsys.ErrNotDir)
	}
	recs, err := v.host.List(ctx, at, ino)
	if err != nil {
		return nil, err
	}
	out := make([]fsys.DirEntry, 0, len(recs))
	for i := range recs {
		e, err := openEntry(key, recs[i].Key, recs[i].Sealed)
		if err != nil {
			return nil, err
		}
		out = append(out, fsys.DirEntry{Name: e.Name, Ino: e.Ino, Kind: e.Kind})
	}
	slices.SortFunc(out, func(a, b fsys.DirEntry) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out, nil
}

// ReadAtVersion reads file p as of version at (the CLI's `bt get --at`).
func (c *Client) ReadAtVersion(ctx context.Context, p paths.Path, at uint64, buf []byte, off int64) (int, error) {
	v, ino, key, n, _, err := c.walkAt(ctx, p, at)
	if err != nil {
		return 0, err
	}
	if n.Kind != fsys.KindFile {
		return 0, fmt.Errorf("fsys: read %s: %w", p, fsys.ErrIsDir)
	}
	in := &inoInfo{vol: v, key: key}
	f := &fileState{c: c, ino: ino, in: in, key: key, n: n, dirty: map[uint64][]byte{}, sealing: map[uint64]*sealJob{}}
	if off < 0 {
		return 0, fsys.ErrInvalid
	}
	if off >= int64(n.Size) {
		return 0, nil
	}
	if int64(len(buf)) > int64(n.Size)-off {
		buf = buf[:int64(n.Size)-off]
	}
	done := 0
	for done < len(buf) {
		pos := off + int64(done)
		idx, inner := uint64(pos/fsys.ChunkSize), int(pos%fsys.ChunkSize)
		m := min(len(buf)-done, fsys.ChunkSize-inner)
		if err := f.readChunk(ctx, idx, inner, buf[done:done+m]); err != nil {
			return done, err
		}
		done += m
	}
	return done, nil
}

// ---- grants ----

// Grant gives principal read (a readcap of p's key, stored on the host)
// or write (p becomes a write point, and a writecap is issued with
// Config.Issuer, returned, and also handed to Config.Issued when set;
// without an Issuer, fsys.ErrNotSupported). A read grant returns a nil
// writecap. Only principals whose ID embeds the public key (Ed25519) can
// be granted read; others get fsys.ErrNotSupported.
func (c *Client) Grant(ctx context.Context, p paths.Path, principal paths.ID, r fsys.Right, expires time.Time) (*caps.Writecap, error) {
	switch r {
	case fsys.RightRead:
		return nil, c.grantRead(ctx, p, principal)
	case fsys.RightWrite:
		return c.grantWrite(ctx, p, principal, expires)
	}
	return nil, fmt.Errorf("fsys: grant: right %d: %w", r, fsys.ErrInvalid)
}

func (c *Client) grantRead(ctx context.Context, p paths.Path, principal paths.ID) error {
	pk, err := publicKeyOf(principal)
	if err != nil {
		return err
	}
	ino, err := c.walk(ctx, p)
	if err != nil {
		return err
	}
	v, err := c.volOf(ino)
	if err != nil {
		return err
	}
	_, err = c.updateDurable(ctx, v, "grant read", func(b *txb) error {
		in, n, _, err := b.inode(ctx, ino)
		if err != nil {
			return err
		}
		key, err := c.keyOf(in, ino)
		if err != nil {
			return err
		}
		rc, err := caps.WrapKey(pk, key, fsys.ReadcapPurpose(ino))
		if err != nil {
			return fmt.Errorf("fsys: grant read: %w: %v", fsys.ErrNotSupported, err)
		}
		b.rc = []fsys.Readcap{{Ino: ino, Reader: principal, Cap: rc.Marshal()}}
		if slices.Contains(n.Readers, string(principal)) {
			return nil
		}
		n.Readers = append(n.Readers, string(principal))
		n.Ctime = c.now().UnixNano()
		return b.putInode(ino, b.parents[ino], b.grants[ino], n, key)
	})
	return err
}

func (c *Client) grantWrite(ctx context.Context, p paths.Path, principal paths.ID, expires time.Time) (*caps.Writecap, error) {
	if c.cfg.Issuer == nil || c.cfg.Writecap == nil {
		return nil, fmt.Errorf("fsys: grant write: this client has no issuer key: %w", fsys.ErrNotSupported)
	}
	ino, err := c.walk(ctx, p)
	if err != nil {
		return nil, err
	}
	v, err := c.volOf(ino)
	if err != nil {
		return nil, err
	}
	if !p.HasPrefix(v.path) {
		return nil, fmt.Errorf("fsys: grant write: %w", fsys.ErrInvalid)
	}
	_, err = c.updateDurable(ctx, v, "grant write", func(b *txb) error {
		in, n, _, err := b.inode(ctx, ino)
		if err != nil {
			return err
		}
		if b.grants[ino] == p {
			return nil
		}
		key, err := c.keyOf(in, ino)
		if err != nil {
			return err
		}
		n.Ctime = c.now().UnixNano()
		return b.putInode(ino, b.parents[ino], p, n, key)
	})
	if err != nil {
		return nil, err
	}
	return c.IssueWritecap(ctx, p, principal, expires)
}

// IssueWritecap issues principal a writecap for p under this client's
// own, valid until expires (zero: the client's own writecap's expiry),
// without marking anything in a volume: the right to write p as a path,
// e.g. to message it or serve it in a queue group.
func (c *Client) IssueWritecap(ctx context.Context, p paths.Path, principal paths.ID, expires time.Time) (*caps.Writecap, error) {
	if c.cfg.Issuer == nil || c.cfg.Writecap == nil {
		return nil, fmt.Errorf("fsys: grant write: this client has no issuer key: %w", fsys.ErrNotSupported)
	}
	if expires.IsZero() {
		expires = c.cfg.Writecap.Expiry()
	}
	w, err := caps.Issue(ctx, c.cfg.Issuer, c.cfg.Writecap, principal, p, c.now().Add(-5*time.Minute), expires)
	if err != nil {
		return nil, fmt.Errorf("fsys: grant write: %w: %v", fsys.ErrPermission, err)
	}
	if c.cfg.Issued != nil {
		if err := c.cfg.Issued(ctx, w); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Revoke takes a right back. Revoking read gives the inode at p a new key
// (its entries, or its chunks, are resealed; its parent's entry re-wraps
// it), rewraps readcaps for the remaining readers and removes principal's.
// Revoking write is fsys.ErrNotSupported: writecaps expire (docs/fs.md).
func (c *Client) Revoke(ctx context.Context, p paths.Path, principal paths.ID, r fsys.Right) error {
	if r == fsys.RightWrite {
		return fmt.Errorf("fsys: revoke write: writecaps expire and cannot be recalled: %w", fsys.ErrNotSupported)
	}
	if r != fsys.RightRead {
		return fmt.Errorf("fsys: revoke: right %d: %w", r, fsys.ErrInvalid)
	}
	ino, err := c.walk(ctx, p)
	if err != nil {
		return err
	}
	v, err := c.volOf(ino)
	if err != nil {
		return err
	}
	if f := c.fileIfPending(ino); f != nil {
		if err := f.sync(ctx, true); err != nil {
			return err
		}
	}
	var parentPath paths.Path
	var name string
	if ino != v.root {
		var ok bool
		if parentPath, ok = p.Parent(); !ok {
			return fmt.Errorf("fsys: revoke %s: %w", p, fsys.ErrInvalid)
		}
		name = p.Base()
	}
	var parent fsys.Ino
	if ino != v.root {
		if parent, err = c.walk(ctx, parentPath); err != nil {
			return err
		}
	}
	newK := newKey()
	_, err = c.updateDurable(ctx, v, "revoke read", func(b *txb) error {
		in, n, _, err := b.inode(ctx, ino)
		if err != nil {
			return err
		}
		oldK, err := c.keyOf(in, ino)
		if err != nil {
			return err
		}
		n.Readers = slices.DeleteFunc(n.Readers, func(s string) bool { return s == string(principal) })
		n.Ctime = c.now().UnixNano()
		switch n.Kind {
		case fsys.KindDir:
			recs, err := v.host.List(ctx, 0, ino)
			if err != nil {
				return err
			}
			onk, nnk := nameKey(oldK), nameKey(newK)
			_ = onk
			for i := range recs {
				e, err := openEntry(oldK, recs[i].Key, recs[i].Sealed)
				if err != nil {
					return err
				}
				b.touch(recs[i].Key, recs[i].Version)
				b.delete(recs[i].Key)
				nk := fsys.RecordKey{Ino: ino, Name: nameMAC(nnk, e.Name)}
				b.touch(nk, 0)
				if err := b.putEntry(newK, nk, e); err != nil {
					return err
				}
			}
		case fsys.KindFile:
			f := &fileState{c: c, ino: ino, in: in, key: oldK, n: n}
			for i, r := range n.refs {
				pl, err := f.plain(ctx, r)
				if err != nil {
					return err
				}
				nr, blk, err := sealChunk(newK, ino, r.Index, pl)
				if err != nil {
					return err
				}
				if err := c.cfg.Store.Put(ctx, blk); err != nil {
					return err
				}
				n.refs[i] = nr
			}
		}
		if err := b.putInode(ino, b.parents[ino], b.grants[ino], n, newK); err != nil {
			return err
		}
		b.learnKeys[ino] = newK
		if ino != v.root {
			pin, _, err := b.dir(ctx, parent)
			if err != nil {
				return err
			}
			k, e, err := b.entry(ctx, pin, parent, name)
			if err != nil {
				return err
			}
			if e == nil || e.Ino != ino {
				return fmt.Errorf("fsys: revoke %s: moved meanwhile: %w", p, fsys.ErrConflict)
			}
			pkey, err := c.keyOf(pin, parent)
			if err != nil {
				return err
			}
			ne := *e
			ne.Key = newK
			if err := b.putEntry(pkey, k, &ne); err != nil {
				return err
			}
		}
		b.rc, b.rr = nil, []fsys.Readcap{{Ino: ino, Reader: principal}}
		for _, r := range n.Readers {
			pk, err := publicKeyOf(paths.ID(r))
			if err != nil {
				continue
			}
			rc, err := caps.WrapKey(pk, newK, fsys.ReadcapPurpose(ino))
			if err != nil {
				continue
			}
			b.rc = append(b.rc, fsys.Readcap{Ino: ino, Reader: paths.ID(r), Cap: rc.Marshal()})
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	delete(v.lists, ino)
	c.mu.Unlock()
	c.dropFile(ino)
	return nil
}
