package order_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/order"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// The volume of every test: root inode 1 (write point vol) with a
// directory 2, a subtree 3 granted to vol/sub holding the file 4, and an
// entry "a" in the root.
const (
	root  fsys.Ino = 1
	dir   fsys.Ino = 2
	sub   fsys.Ino = 3
	file  fsys.Ino = 4
	fresh fsys.Ino = 9 // not in the volume
)

// world is a volume, its owner, and writers signed by the owner's node.
type world struct {
	vol, subPath paths.Path
	owner, node  *softkey.Key
	all, subOnly *writer // writecaps for vol and vol/sub
	now          time.Time
	rules        *order.Rules
}

type writer struct {
	vol  paths.Path
	wc   *caps.Writecap
	hk   crypto.PrivKey
	cert *caps.HostCert
}

func newWorld(t *testing.T) *world {
	t.Helper()
	s := make([]byte, 32)
	s[0] = 7
	owner, err := softkey.FromSeed(s)
	if err != nil {
		t.Fatal(err)
	}
	s[1] = 1
	node, err := softkey.FromSeed(s)
	if err != nil {
		t.Fatal(err)
	}
	rid, _ := caps.PrincipalID(owner.PublicKey())
	vol, _ := paths.New(rid, "data")
	subPath, _ := paths.New(rid, "data", "sub")
	w := &world{vol: vol, subPath: subPath, owner: owner, node: node, now: time.Now()}
	w.all = w.writer(t, vol)
	w.subOnly = w.writer(t, subPath)
	w.rules = order.New(vol, root, nil)
	return w
}

func (w *world) writer(t *testing.T, prefix paths.Path) *writer {
	t.Helper()
	ctx := context.Background()
	nid, _ := caps.PrincipalID(w.node.PublicKey())
	wc, err := caps.Issue(ctx, w.owner, nil, nid, prefix, w.now.Add(-time.Hour), w.now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	hk, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	cert, err := caps.IssueHostCert(ctx, w.node, hk.GetPublic(), w.now.Add(-time.Hour), w.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &writer{vol: w.vol, wc: wc, hk: hk, cert: cert}
}

// state is the volume at version 10.
func (w *world) state() order.State {
	m := order.Map{}
	for _, r := range []fsys.Record{
		{Key: fsys.RecordKey{Ino: root}, Version: 1, Grant: w.vol},
		{Key: fsys.RecordKey{Ino: dir}, Parent: root, Version: 2},
		{Key: fsys.RecordKey{Ino: sub}, Parent: root, Version: 3, Grant: w.subPath},
		{Key: fsys.RecordKey{Ino: file}, Parent: sub, Version: 4},
		{Key: entry(root, "a"), Version: 5},
		// An orphan (no write point above it) and a loop of parents.
		{Key: fsys.RecordKey{Ino: 20}, Version: 6},
		{Key: fsys.RecordKey{Ino: 30}, Parent: 31, Version: 6},
		{Key: fsys.RecordKey{Ino: 31}, Parent: 30, Version: 6},
	} {
		m[r.Key] = &r
	}
	return order.State{Version: 10, Records: m}
}

func entry(d fsys.Ino, name string) fsys.RecordKey {
	k := fsys.RecordKey{Ino: d}
	copy(k.Name[:], name)
	k.Name[31] = 1
	return k
}

func inode(ino, parent fsys.Ino) fsys.Record {
	return fsys.Record{Key: fsys.RecordKey{Ino: ino}, Parent: parent, Sealed: []byte("x")}
}

// tx is a signed Tx; edit changes it before it is signed.
func (wr *writer) tx(t *testing.T, edit func(tx *fsys.Tx)) *fsys.Tx {
	t.Helper()
	tx := &fsys.Tx{Volume: wr.vol, Op: "test", Writecap: wr.wc, HostCert: wr.cert}
	edit(tx)
	if err := fsys.SignTx(tx, wr.hk); err != nil {
		t.Fatal(err)
	}
	return tx
}

// put makes tx put recs, each with base version bases[i] (0 when missing).
func put(tx *fsys.Tx, bases []uint64, recs ...fsys.Record) {
	for i, r := range recs {
		tx.Put = append(tx.Put, r)
		var b uint64
		if i < len(bases) {
			b = bases[i]
		}
		tx.Base = append(tx.Base, fsys.Base{Key: r.Key, Version: b})
	}
}

func readcap(t *testing.T, w *world, ino fsys.Ino) fsys.Readcap {
	t.Helper()
	rc, err := caps.WrapKey(w.owner.PublicKey(), make([]byte, 32), "test")
	if err != nil {
		t.Fatal(err)
	}
	rid, _ := caps.PrincipalID(w.owner.PublicKey())
	return fsys.Readcap{Ino: ino, Reader: rid, Cap: rc.Marshal()}
}

func TestAdmit(t *testing.T) {
	w := newWorld(t)
	other, _ := paths.New(w.vol.Root(), "other")
	tests := []struct {
		name string
		tx   func(t *testing.T) *fsys.Tx
		now  time.Time // zero: w.now
		want order.Kind
	}{
		{"create", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)) })
		}, time.Time{}, 0},
		{"root", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) {
				r := inode(root, 0)
				r.Grant = w.vol
				put(tx, nil, r)
			})
		}, time.Time{}, 0},
		{"nil", func(t *testing.T) *fsys.Tx { return nil }, time.Time{}, order.Malformed},
		{"other volume", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { tx.Volume = other; put(tx, nil, inode(fresh, dir)) })
		}, time.Time{}, order.Malformed},
		{"empty", func(t *testing.T) *fsys.Tx { return w.all.tx(t, func(tx *fsys.Tx) {}) }, time.Time{}, order.Malformed},
		{"long op", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { tx.Op = strings.Repeat("x", 65); put(tx, nil, inode(fresh, dir)) })
		}, time.Time{}, order.Malformed},
		{"put twice", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)); tx.Put = append(tx.Put, inode(fresh, dir)) })
		}, time.Time{}, order.Malformed},
		{"ino 0", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(0, dir)) })
		}, time.Time{}, order.Malformed},
		{"entry with parent", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) {
				put(tx, nil, fsys.Record{Key: entry(dir, "b"), Parent: dir, Sealed: []byte("x")})
			})
		}, time.Time{}, order.Malformed},
		{"inode without parent", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, 0)) })
		}, time.Time{}, order.Malformed},
		{"own parent", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, fresh)) })
		}, time.Time{}, order.Malformed},
		{"root with parent", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(root, dir)) })
		}, time.Time{}, order.Malformed},
		{"root grant", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { r := inode(root, 0); r.Grant = w.subPath; put(tx, nil, r) })
		}, time.Time{}, order.Malformed},
		{"grant outside", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { r := inode(fresh, dir); r.Grant = other; put(tx, nil, r) })
		}, time.Time{}, order.Malformed},
		{"no content", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { r := inode(fresh, dir); r.Sealed = nil; put(tx, nil, r) })
		}, time.Time{}, order.Malformed},
		{"delete root", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) {
				k := fsys.RecordKey{Ino: root}
				tx.Delete = []fsys.RecordKey{k}
				tx.Base = []fsys.Base{{Key: k, Version: 1}}
			})
		}, time.Time{}, order.Malformed},
		{"put and delete", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)); tx.Delete = []fsys.RecordKey{{Ino: fresh}} })
		}, time.Time{}, order.Malformed},
		{"base twice", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)); tx.Base = append(tx.Base, tx.Base[0]) })
		}, time.Time{}, order.Malformed},
		{"no base", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { tx.Put = []fsys.Record{inode(fresh, dir)} })
		}, time.Time{}, order.Malformed},
		{"unsigned", func(t *testing.T) *fsys.Tx {
			tx := w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)) })
			tx.Sig = nil
			return tx
		}, time.Time{}, order.BadSignature},
		{"changed after signing", func(t *testing.T) *fsys.Tx {
			tx := w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)) })
			tx.Op = "forged"
			return tx
		}, time.Time{}, order.BadSignature},
		{"certificate expired", func(t *testing.T) *fsys.Tx {
			return w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)) })
		}, w.now.Add(2 * time.Hour), order.BadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = w.now
			}
			// Twice: the second time the certificate is known (cached).
			for range 2 {
				checkKind(t, w.rules.Admit(tt.tx(t), now), tt.want)
			}
		})
	}
}

func checkKind(t *testing.T, err error, want order.Kind) {
	t.Helper()
	if got := order.KindOf(err); got != want {
		t.Fatalf("refusal %v (%v), want %v", got, err, want)
	}
	sentinel := map[order.Kind]error{order.Malformed: fsys.ErrInvalid, order.BadSignature: fsys.ErrPermission,
		order.Conflict: fsys.ErrConflict, order.NoWritePoint: fsys.ErrInvalid,
		order.NotAuthorized: fsys.ErrPermission, order.BadReadcap: fsys.ErrInvalid}[want]
	if want != 0 && !errors.Is(err, sentinel) {
		t.Fatalf("%v does not wrap %v", err, sentinel)
	}
}

func TestApply(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name string
		wr   *writer
		edit func(tx *fsys.Tx)
		want order.Kind
	}{
		{"create", w.all, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)) }, 0},
		{"create entry", w.all, func(tx *fsys.Tx) {
			put(tx, nil, fsys.Record{Key: entry(dir, "b"), Sealed: []byte("x")})
		}, 0},
		{"update", w.all, func(tx *fsys.Tx) { put(tx, []uint64{2}, inode(dir, root)) }, 0},
		{"delete", w.all, func(tx *fsys.Tx) {
			tx.Delete = []fsys.RecordKey{entry(root, "a")}
			tx.Base = []fsys.Base{{Key: entry(root, "a"), Version: 5}}
		}, 0},
		{"delete absent", w.all, func(tx *fsys.Tx) {
			tx.Delete = []fsys.RecordKey{entry(dir, "nothing")}
			tx.Base = []fsys.Base{{Key: entry(dir, "nothing")}}
		}, 0},
		{"grant", w.all, func(tx *fsys.Tx) {
			r := inode(fresh, dir)
			r.Grant = w.subPath
			put(tx, nil, r)
		}, 0},
		{"readcap", w.all, func(tx *fsys.Tx) { tx.Readcaps = []fsys.Readcap{readcap(t, w, dir)} }, 0},
		{"revoke", w.all, func(tx *fsys.Tx) { tx.RevokeReaders = []fsys.Readcap{{Ino: dir, Reader: "r"}} }, 0},
		{"in the subtree", w.subOnly, func(tx *fsys.Tx) { put(tx, []uint64{4}, inode(file, sub)) }, 0},
		{"create in the subtree", w.subOnly, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, file)) }, 0},

		{"base behind", w.all, func(tx *fsys.Tx) { put(tx, []uint64{1}, inode(dir, root)) }, order.Conflict},
		{"base ahead", w.all, func(tx *fsys.Tx) { put(tx, []uint64{3}, inode(dir, root)) }, order.Conflict},
		{"created already", w.all, func(tx *fsys.Tx) { put(tx, nil, inode(dir, root)) }, order.Conflict},
		{"deleted already", w.all, func(tx *fsys.Tx) { put(tx, []uint64{7}, inode(fresh, dir)) }, order.Conflict},

		{"parent missing", w.all, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, 77)) }, order.NoWritePoint},
		{"orphan", w.all, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, 20)) }, order.NoWritePoint},
		{"parent loop", w.all, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, 30)) }, order.NoWritePoint},
		{"entry in no directory", w.all, func(tx *fsys.Tx) {
			put(tx, nil, fsys.Record{Key: entry(77, "b"), Sealed: []byte("x")})
		}, order.NoWritePoint},
		{"readcap of nothing", w.all, func(tx *fsys.Tx) { tx.Readcaps = []fsys.Readcap{readcap(t, w, 77)} }, order.NoWritePoint},

		{"outside the writecap", w.subOnly, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)) }, order.NotAuthorized},
		{"move out of the subtree", w.subOnly, func(tx *fsys.Tx) { put(tx, []uint64{4}, inode(file, dir)) }, order.NotAuthorized},
		{"move into the subtree", w.subOnly, func(tx *fsys.Tx) { put(tx, []uint64{2}, inode(dir, sub)) }, order.NotAuthorized},
		{"grant own write point", w.subOnly, func(tx *fsys.Tx) {
			r := inode(fresh, file)
			r.Grant = w.subPath
			put(tx, nil, r)
		}, 0},
		{"grant above the writecap", w.subOnly, func(tx *fsys.Tx) {
			r := inode(fresh, dir)
			r.Grant = w.subPath
			put(tx, nil, r)
		}, order.NotAuthorized},
		{"readcap outside", w.subOnly, func(tx *fsys.Tx) { tx.Readcaps = []fsys.Readcap{readcap(t, w, dir)} }, order.NotAuthorized},
		{"delete outside", w.subOnly, func(tx *fsys.Tx) {
			tx.Delete = []fsys.RecordKey{entry(root, "a")}
			tx.Base = []fsys.Base{{Key: entry(root, "a"), Version: 5}}
		}, order.NotAuthorized},

		{"readcap garbage", w.all, func(tx *fsys.Tx) {
			tx.Readcaps = []fsys.Readcap{{Ino: dir, Reader: "r", Cap: []byte("garbage")}}
		}, order.BadReadcap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := w.state()
			if tt.name == "deleted already" {
				st.Records.(order.Map)[fsys.RecordKey{Ino: fresh}] = nil // a tombstone reads as absent
			}
			tx := tt.wr.tx(t, tt.edit)
			if err := w.rules.Admit(tx, w.now); err != nil {
				t.Fatalf("Admit: %v", err)
			}
			e, err := w.rules.Apply(st, tx)
			checkKind(t, err, tt.want)
			if tt.want != 0 {
				if e.Version != 0 {
					t.Fatalf("refused Tx has effects %+v", e)
				}
				return
			}
			if e.Version != st.Version+1 || e.Op != tx.Op || e.Writer != tt.wr.wc.Prefix() {
				t.Fatalf("effects version %d op %q writer %s", e.Version, e.Op, e.Writer)
			}
			if len(e.Put) != len(tx.Put) || len(e.Delete) != len(tx.Delete) || len(e.Keys) != len(tx.Put)+len(tx.Delete) {
				t.Fatalf("effects %+v for tx %+v", e, tx)
			}
			for i, r := range e.Put {
				if r.Version != e.Version || r.Key != tx.Put[i].Key || e.Keys[i] != r.Key {
					t.Fatalf("put %d: %+v", i, r)
				}
				if tx.Put[i].Version != 0 {
					t.Fatal("Apply changed the Tx")
				}
			}
			if c := e.Change(); c.Version != e.Version || len(c.Keys) != len(e.Keys) {
				t.Fatalf("change %+v", c)
			}
		})
	}
}

// TestOverlay applies Txs in a row as a group commit does: each sees what
// the earlier ones left.
func TestOverlay(t *testing.T) {
	w := newWorld(t)
	st := w.state()
	ov := order.NewOverlay(st.Records)
	ver := st.Version
	apply := func(edit func(tx *fsys.Tx), want order.Kind) {
		t.Helper()
		e, err := w.rules.Apply(order.State{Version: ver, Records: ov}, w.all.tx(t, edit))
		checkKind(t, err, want)
		if err == nil {
			ov.Add(&e)
			ver = e.Version
		}
	}
	apply(func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)) }, 0)
	apply(func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)) }, order.Conflict) // created by the first
	apply(func(tx *fsys.Tx) { put(tx, []uint64{11}, inode(fresh, dir)) }, 0)
	apply(func(tx *fsys.Tx) { put(tx, nil, inode(fresh+1, fresh)) }, 0) // under the new inode
	apply(func(tx *fsys.Tx) {
		tx.Delete = []fsys.RecordKey{{Ino: fresh}}
		tx.Base = []fsys.Base{{Key: fsys.RecordKey{Ino: fresh}, Version: 12}}
	}, 0)
	apply(func(tx *fsys.Tx) { put(tx, nil, inode(fresh+2, fresh)) }, order.NoWritePoint) // its parent is gone
	if ver != 14 || ov.Len() != 2 {
		t.Fatalf("version %d, %d records changed; want 14, 2", ver, ov.Len())
	}
	for k, r := range ov.Changed() {
		switch k.Ino {
		case fresh:
			if r != nil {
				t.Fatalf("deleted inode reads %+v", r)
			}
		case fresh + 1:
			if r == nil || r.Version != 14-1 {
				t.Fatalf("inode %d: %+v", k.Ino, r)
			}
		default:
			t.Fatalf("unexpected change of %v", k)
		}
	}
	if r, _ := st.Records.Record(fsys.RecordKey{Ino: fresh}); r != nil {
		t.Fatal("the overlay changed the state under it")
	}
}

type failing struct{}

var errRead = errors.New("read failed")

func (failing) Record(fsys.RecordKey) (*fsys.Record, error) { return nil, errRead }

// TestReadError: a failing read is the caller's error, not a refusal.
func TestReadError(t *testing.T) {
	w := newWorld(t)
	_, err := w.rules.Apply(order.State{Records: failing{}}, w.all.tx(t, func(tx *fsys.Tx) { put(tx, nil, inode(fresh, dir)) }))
	if !errors.Is(err, errRead) || order.KindOf(err) != 0 {
		t.Fatalf("Apply = %v, want the read error", err)
	}
}
