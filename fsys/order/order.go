package order

import (
	"fmt"
	"sync"
	"time"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

// MaxDepth bounds the Parent chain of a write point.
const MaxDepth = 1024

// maxCerts bounds the verified-certificate cache; past it, it is emptied.
const maxCerts = 1024

// Rules are the ordering rules of one volume. See the package comment.
type Rules struct {
	vol      paths.Path
	root     fsys.Ino
	verifier *caps.Verifier

	// certMu guards certs: the host certificates (by their encoding)
	// whose node signature verified, so that a writer's Txs cost one
	// signature check each, not two.
	certMu sync.Mutex
	certs  map[string]bool
}

// New returns the rules of the volume vol whose root inode is root;
// writecaps are checked with v (nil: a fresh caps.Verifier).
func New(vol paths.Path, root fsys.Ino, v *caps.Verifier) *Rules {
	if v == nil {
		v = caps.NewVerifier()
	}
	return &Rules{vol: vol, root: root, verifier: v}
}

// Volume returns the volume's path.
func (r *Rules) Volume() paths.Path { return r.vol }

// Root returns the volume's root inode.
func (r *Rules) Root() fsys.Ino { return r.root }

// Admit checks tx's shape and signature at now (see the package comment).
// It returns nil or a *Refusal of kind Malformed or BadSignature. Safe for
// concurrent use.
func (r *Rules) Admit(tx *fsys.Tx, now time.Time) error {
	if tx == nil {
		return refuse(Malformed, fsys.ErrInvalid)
	}
	if err := r.validate(tx); err != nil {
		return err
	}
	if err := r.verifySig(tx, now); err != nil {
		return &Refusal{Kind: BadSignature, err: err}
	}
	return nil
}

// validate checks tx's shape (no state needed).
func (r *Rules) validate(tx *fsys.Tx) error {
	if tx.Volume != r.vol {
		return refusef(Malformed, "tx for volume %s sent to %s: %w", tx.Volume, r.vol, fsys.ErrInvalid)
	}
	n := len(tx.Put) + len(tx.Delete) + len(tx.Readcaps) + len(tx.RevokeReaders)
	if n == 0 || n > fsys.MaxTxRecords || len(tx.Base) > fsys.MaxTxRecords || len(tx.Op) > 64 {
		return refusef(Malformed, "tx with %d changes: %w", n, fsys.ErrInvalid)
	}
	touched := map[fsys.RecordKey]bool{}
	for i := range tx.Put {
		rec := &tx.Put[i]
		if rec.Key.Ino == 0 || touched[rec.Key] {
			return refusef(Malformed, "put %v twice or with Ino 0: %w", rec.Key, fsys.ErrInvalid)
		}
		touched[rec.Key] = true
		if rec.Key.IsEntry() {
			if rec.Parent != 0 || !rec.Grant.IsZero() || len(rec.Blocks) > 0 {
				return refusef(Malformed, "entry record with parent, grant or blocks: %w", fsys.ErrInvalid)
			}
		} else {
			if (rec.Parent == 0) != (rec.Key.Ino == r.root) || rec.Parent == rec.Key.Ino {
				return refusef(Malformed, "inode %016x with parent %016x: %w", uint64(rec.Key.Ino), uint64(rec.Parent), fsys.ErrInvalid)
			}
			if rec.Key.Ino == r.root && rec.Grant != r.vol {
				return refusef(Malformed, "volume root's grant must be %s: %w", r.vol, fsys.ErrInvalid)
			}
			if !rec.Grant.IsZero() && !rec.Grant.HasPrefix(r.vol) {
				return refusef(Malformed, "grant %s outside the volume: %w", rec.Grant, fsys.ErrInvalid)
			}
		}
		if len(rec.Sealed) == 0 || len(rec.Sealed) > fsys.MaxTxSize {
			return refusef(Malformed, "record %v without content: %w", rec.Key, fsys.ErrInvalid)
		}
	}
	for _, k := range tx.Delete {
		if k.Ino == 0 || touched[k] || k == (fsys.RecordKey{Ino: r.root}) {
			return refusef(Malformed, "delete of %v: %w", k, fsys.ErrInvalid)
		}
		touched[k] = true
	}
	based := map[fsys.RecordKey]bool{}
	for _, b := range tx.Base {
		if based[b.Key] {
			return refusef(Malformed, "base %v twice: %w", b.Key, fsys.ErrInvalid)
		}
		based[b.Key] = true
	}
	for k := range touched {
		if !based[k] {
			return refusef(Malformed, "record %v changed without a base: %w", k, fsys.ErrInvalid)
		}
	}
	return nil
}

// verifySig is fsys.VerifyTxSig with the host certificate's node
// signature checked once per certificate (its validity window every
// time).
func (r *Rules) verifySig(tx *fsys.Tx, now time.Time) error {
	cert := tx.HostCert
	if cert == nil || tx.Writecap == nil || len(tx.Sig) == 0 || len(tx.Sig) > 1024 || len(cert.Marshal()) == 0 {
		return fsys.VerifyTxSig(tx, now)
	}
	raw := string(cert.Marshal())
	r.certMu.Lock()
	known := r.certs[raw]
	r.certMu.Unlock()
	if !known || now.Before(cert.NotBefore) || !now.Before(cert.Expiry) {
		if err := fsys.VerifyTxSig(tx, now); err != nil {
			return err
		}
		r.certMu.Lock()
		if r.certs == nil || len(r.certs) >= maxCerts {
			r.certs = map[string]bool{}
		}
		r.certs[raw] = true
		r.certMu.Unlock()
		return nil
	}
	m, err := fsys.TxSigningBytes(tx)
	if err != nil {
		return err
	}
	if ok, err := cert.Host.Verify(m, tx.Sig); err != nil || !ok {
		return fmt.Errorf("fsys: tx: bad signature: %w", fsys.ErrPermission)
	}
	return nil
}

// Apply checks an admitted tx against st (see the package comment) and
// returns the Effects of committing it as version st.Version+1. Errors: a
// *Refusal of kind Conflict, NoWritePoint, NotAuthorized or BadReadcap,
// or the error of st.Records. Apply does not check what Admit checks.
func (r *Rules) Apply(st State, tx *fsys.Tx) (Effects, error) {
	if err := r.check(st.Records, tx); err != nil {
		return Effects{}, err
	}
	ver := st.Version + 1
	e := Effects{
		Version:       ver,
		Put:           make([]fsys.Record, len(tx.Put)),
		Delete:        tx.Delete,
		Readcaps:      tx.Readcaps,
		RevokeReaders: tx.RevokeReaders,
		Keys:          make([]fsys.RecordKey, 0, len(tx.Put)+len(tx.Delete)),
		Writer:        tx.Writecap.Prefix(),
		Op:            tx.Op,
		Time:          tx.Time,
	}
	for i := range tx.Put {
		e.Put[i] = tx.Put[i]
		e.Put[i].Version = ver
		e.Keys = append(e.Keys, tx.Put[i].Key)
	}
	e.Keys = append(e.Keys, tx.Delete...)
	return e, nil
}

// view is the volume as a Tx would leave it: the Tx's puts and deletes
// over the records of a State.
type view struct {
	recs  Records
	put   map[fsys.RecordKey]*fsys.Record
	del   map[fsys.RecordKey]bool
	cache map[fsys.RecordKey]*fsys.Record // records read so far (nil: absent)
}

// stored returns k's record in the State (nil: absent).
func (v *view) stored(k fsys.RecordKey) (*fsys.Record, error) {
	if r, ok := v.cache[k]; ok {
		return r, nil
	}
	r, err := v.recs.Record(k)
	if err != nil {
		return nil, err
	}
	v.cache[k] = r
	return r, nil
}

// get returns k's record before (after false) or after the Tx.
func (v *view) get(k fsys.RecordKey, after bool) (*fsys.Record, error) {
	if after {
		if r, ok := v.put[k]; ok {
			return r, nil
		}
		if v.del[k] {
			return nil, nil
		}
	}
	return v.stored(k)
}

// writePoint returns the Grant of the nearest inode, from ino upward, in
// the state before or after the Tx. skipSelf ignores ino's own Grant.
func (v *view) writePoint(ino fsys.Ino, after, skipSelf bool) (paths.Path, error) {
	for depth := 0; depth < MaxDepth; depth++ {
		r, err := v.get(fsys.RecordKey{Ino: ino}, after)
		if err != nil {
			return paths.Path{}, err
		}
		if r == nil {
			return paths.Path{}, refusef(NoWritePoint, "inode %016x does not exist: %w", uint64(ino), fsys.ErrInvalid)
		}
		if !r.Grant.IsZero() && !(skipSelf && depth == 0) {
			return r.Grant, nil
		}
		if r.Parent == 0 {
			return paths.Path{}, refusef(NoWritePoint, "inode %016x has no write point: %w", uint64(ino), fsys.ErrInvalid)
		}
		ino = r.Parent
	}
	return paths.Path{}, refusef(NoWritePoint, "parent chain deeper than %d: %w", MaxDepth, fsys.ErrInvalid)
}

// check verifies tx against recs: bases, then write points, then
// readcaps.
func (r *Rules) check(recs Records, tx *fsys.Tx) error {
	v := &view{recs: recs, put: map[fsys.RecordKey]*fsys.Record{}, del: map[fsys.RecordKey]bool{}, cache: map[fsys.RecordKey]*fsys.Record{}}
	for _, b := range tx.Base {
		rec, err := v.stored(b.Key)
		if err != nil {
			return err
		}
		var cur uint64
		if rec != nil {
			cur = rec.Version
		}
		if cur != b.Version {
			return refusef(Conflict, "record %016x/%x is at version %d, not %d: %w", uint64(b.Key.Ino), b.Key.Name[:4], cur, b.Version, fsys.ErrConflict)
		}
	}
	for i := range tx.Put {
		v.put[tx.Put[i].Key] = &tx.Put[i]
	}
	for _, k := range tx.Delete {
		v.del[k] = true
	}
	need := map[paths.Path]bool{}
	add := func(ino fsys.Ino, after, skipSelf bool) error {
		wp, err := v.writePoint(ino, after, skipSelf)
		if err != nil {
			return err
		}
		need[wp] = true
		return nil
	}
	// before needs the write point of k's record before the Tx, if it had
	// one, and returns that record.
	before := func(k fsys.RecordKey) (*fsys.Record, error) {
		old, err := v.stored(k)
		if err != nil || old == nil {
			return old, err
		}
		return old, add(k.Ino, false, false)
	}
	for k := range v.put {
		old, err := before(k)
		if err != nil {
			return err
		}
		if err := add(k.Ino, true, false); err != nil {
			return err
		}
		rec := v.put[k]
		if !k.IsEntry() && !rec.Grant.IsZero() && (old == nil || old.Grant != rec.Grant) && rec.Parent != 0 {
			// Setting a grant needs the write point above it too.
			need[rec.Grant] = true
			if err := add(k.Ino, true, true); err != nil {
				return err
			}
		}
	}
	for k := range v.del {
		if _, err := before(k); err != nil {
			return err
		}
	}
	for _, rc := range append(append([]fsys.Readcap(nil), tx.Readcaps...), tx.RevokeReaders...) {
		if err := add(rc.Ino, true, false); err != nil {
			return err
		}
	}
	for wp := range need {
		if err := r.verifier.VerifyHolder(tx.Writecap, tx.HostCert.NodeID, wp); err != nil {
			return refusef(NotAuthorized, "write point %s: %w: %v", wp, fsys.ErrPermission, err)
		}
	}
	for _, rc := range tx.Readcaps {
		if _, err := caps.DecodeReadcap(rc.Cap); err != nil {
			return refusef(BadReadcap, "readcap: %w: %v", fsys.ErrInvalid, err)
		}
	}
	return nil
}
