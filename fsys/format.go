package fsys

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

// FormatVersion is the version of every format in this file (sealed
// records, chunk blocks, Tx encoding); other versions are refused.
const FormatVersion = 1

// ChunkSize is the plaintext size of one file chunk; chunk i holds bytes
// [i·ChunkSize, (i+1)·ChunkSize) of the file.
const ChunkSize = 256 << 10

// KeySize is the size of every inode key.
const KeySize = 32

// Limits of the decoders.
const (
	// MaxTxSize bounds an encoded Tx (and a sealed record).
	MaxTxSize = 64 << 20
	// MaxChunkRefs bounds the chunks of one file: 2²² × 256 KiB = 1 TiB.
	MaxChunkRefs = 1 << 22
	// MaxTxRecords bounds the records, keys and readcaps in one Tx.
	MaxTxRecords = 1 << 16
	// MaxTargetLen bounds a symlink target.
	MaxTargetLen = 4096
)

// Domain-separation strings (docs/fs.md).
const (
	ctxTxSig   = "blocktree fs tx v1"
	readPurpos = "blocktree fs key v1"
)

// ReadcapPurpose is the caps.WrapKey purpose of the readcap of inode ino.
func ReadcapPurpose(ino Ino) string { return fmt.Sprintf("%s %016x", readPurpos, uint64(ino)) }

// strict is internal/canon's strict decoder with limits sized for records
// and Txs (canon's defaults, 1 MiB and 4096 elements, are too small for a
// large file's chunk list or a big Tx).
var strict, strictErr = canon.NewDecoder(
	canon.WithMaxSize(MaxTxSize),
	canon.WithMaxNested(8),
	canon.WithMaxArrayElements(MaxTxRecords),
	canon.WithMaxMapPairs(64),
)

// strictUnmarshal decodes data into v and refuses anything that is not the
// one canonical encoding of the result.
func strictUnmarshal(data []byte, v any) error {
	if strictErr != nil {
		return strictErr
	}
	return strict.Unmarshal(data, v)
}

// ---- records (host storage and wire) ----

// cidLen is the length of a block CID: CIDv1 raw sha2-256, binary.
const cidLen = 36

type wireKey struct {
	_    struct{} `cbor:",toarray"`
	Ino  Ino
	Name []byte // empty for an inode, else 32 bytes (not all zero)
}

func toWireKey(k RecordKey) wireKey {
	if !k.IsEntry() {
		return wireKey{Ino: k.Ino, Name: []byte{}}
	}
	return wireKey{Ino: k.Ino, Name: bytes.Clone(k.Name[:])}
}

func (w wireKey) key() (RecordKey, error) {
	k := RecordKey{Ino: w.Ino}
	if w.Ino == 0 {
		return k, errors.New("record key with Ino 0")
	}
	switch len(w.Name) {
	case 0:
	case 32:
		copy(k.Name[:], w.Name)
		if !k.IsEntry() {
			return k, errors.New("record name of 32 zero bytes")
		}
	default:
		return k, errors.New("record name length")
	}
	return k, nil
}

type wireRecord struct {
	Key     wireKey `cbor:"k"`
	Parent  Ino     `cbor:"p,omitempty"`
	Version uint64  `cbor:"ver,omitempty"`
	Sealed  []byte  `cbor:"s"`
	Blocks  []byte  `cbor:"b,omitempty"` // packed binary CIDs, 36 bytes each
	Grant   string  `cbor:"g,omitempty"`
}

func packCIDs(cs []cid.Cid) ([]byte, error) {
	if len(cs) == 0 {
		return nil, nil
	}
	out := make([]byte, 0, len(cs)*cidLen)
	for _, c := range cs {
		b := c.Bytes()
		if len(b) != cidLen {
			return nil, fmt.Errorf("CID %s is not CIDv1 raw sha2-256", c)
		}
		out = append(out, b...)
	}
	return out, nil
}

func unpackCIDs(b []byte) ([]cid.Cid, error) {
	if len(b)%cidLen != 0 {
		return nil, errors.New("bad CID list length")
	}
	if len(b) == 0 {
		return nil, nil
	}
	out := make([]cid.Cid, len(b)/cidLen)
	for i := range out {
		c, err := cid.Cast(b[i*cidLen : (i+1)*cidLen])
		if err != nil || c.Prefix().Version != 1 || c.Prefix().Codec != cid.Raw || c.Prefix().MhType != 0x12 {
			return nil, errors.New("bad CID")
		}
		out[i] = c
	}
	return out, nil
}

func toWireRecord(r *Record, withVersion bool) (wireRecord, error) {
	bl, err := packCIDs(r.Blocks)
	if err != nil {
		return wireRecord{}, err
	}
	w := wireRecord{Key: toWireKey(r.Key), Parent: r.Parent, Sealed: r.Sealed, Blocks: bl}
	if w.Sealed == nil {
		w.Sealed = []byte{}
	}
	if withVersion {
		w.Version = r.Version
	}
	if !r.Grant.IsZero() {
		w.Grant = r.Grant.String()
	}
	return w, nil
}

func (w *wireRecord) record() (Record, error) {
	k, err := w.Key.key()
	if err != nil {
		return Record{}, err
	}
	r := Record{Key: k, Parent: w.Parent, Version: w.Version, Sealed: w.Sealed}
	if k.IsEntry() && (w.Parent != 0 || w.Grant != "" || len(w.Blocks) > 0) {
		return Record{}, errors.New("entry record with parent, grant or blocks")
	}
	if r.Blocks, err = unpackCIDs(w.Blocks); err != nil {
		return Record{}, err
	}
	if w.Grant != "" {
		if r.Grant, err = paths.Parse(w.Grant); err != nil {
			return Record{}, err
		}
	}
	return r, nil
}

// MarshalRecord encodes a record (with its Version) as canonical CBOR: the
// form fsys/host stores and a remote host may send (docs/fs.md).
func MarshalRecord(r *Record) ([]byte, error) {
	w, err := toWireRecord(r, true)
	if err != nil {
		return nil, fmt.Errorf("fsys: marshal record: %w: %v", ErrInvalid, err)
	}
	return canon.Marshal(&w)
}

// UnmarshalRecord decodes MarshalRecord's output; errors wrap ErrInvalid.
func UnmarshalRecord(data []byte) (Record, error) {
	var w wireRecord
	if err := strictUnmarshal(data, &w); err != nil {
		return Record{}, fmt.Errorf("fsys: record: %w: %v", ErrInvalid, err)
	}
	r, err := w.record()
	if err != nil {
		return Record{}, fmt.Errorf("fsys: record: %w: %v", ErrInvalid, err)
	}
	return r, nil
}

// ---- Tx encoding and signatures ----

type wireBase struct {
	_       struct{} `cbor:",toarray"`
	Key     wireKey
	Version uint64
}

type wireReadcap struct {
	_      struct{} `cbor:",toarray"`
	Ino    Ino
	Reader string
	Cap    []byte
}

type wireTx struct {
	V        uint          `cbor:"v"`
	Volume   string        `cbor:"vol"`
	Base     []wireBase    `cbor:"base,omitempty"`
	Put      []wireRecord  `cbor:"put,omitempty"`
	Delete   []wireKey     `cbor:"del,omitempty"`
	Readcaps []wireReadcap `cbor:"rc,omitempty"`
	Revoke   []wireReadcap `cbor:"rr,omitempty"`
	Op       string        `cbor:"op"`
	Time     int64         `cbor:"t"`
	Writecap []byte        `cbor:"wc"`
	HostCert []byte        `cbor:"hc"`
	Sig      []byte        `cbor:"sig,omitempty"`
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func toWireTx(tx *Tx, withSig bool) (*wireTx, error) {
	if tx.Writecap == nil || tx.HostCert == nil {
		return nil, errors.New("Tx without writecap or host certificate")
	}
	w := &wireTx{V: FormatVersion, Volume: tx.Volume.String(), Op: tx.Op, Time: unixNano(tx.Time),
		Writecap: tx.Writecap.Marshal(), HostCert: tx.HostCert.Marshal()}
	for _, b := range tx.Base {
		w.Base = append(w.Base, wireBase{Key: toWireKey(b.Key), Version: b.Version})
	}
	for i := range tx.Put {
		r, err := toWireRecord(&tx.Put[i], false)
		if err != nil {
			return nil, err
		}
		w.Put = append(w.Put, r)
	}
	for _, k := range tx.Delete {
		w.Delete = append(w.Delete, toWireKey(k))
	}
	for _, rc := range tx.Readcaps {
		w.Readcaps = append(w.Readcaps, wireReadcap{Ino: rc.Ino, Reader: string(rc.Reader), Cap: nonNil(rc.Cap)})
	}
	for _, rc := range tx.RevokeReaders {
		w.Revoke = append(w.Revoke, wireReadcap{Ino: rc.Ino, Reader: string(rc.Reader), Cap: []byte{}})
	}
	if withSig {
		w.Sig = tx.Sig
	}
	return w, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// TxSigningBytes returns what a Tx's Sig signs: "blocktree fs tx v1", a
// zero byte, and the canonical encoding of the Tx without Sig.
func TxSigningBytes(tx *Tx) ([]byte, error) {
	w, err := toWireTx(tx, false)
	if err != nil {
		return nil, fmt.Errorf("fsys: tx: %w: %v", ErrInvalid, err)
	}
	body, err := canon.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("fsys: tx: %w: %v", ErrInvalid, err)
	}
	m := make([]byte, 0, len(ctxTxSig)+1+len(body))
	m = append(m, ctxTxSig...)
	m = append(m, 0)
	return append(m, body...), nil
}

// MarshalTx encodes a signed Tx as canonical CBOR (docs/fs.md).
func MarshalTx(tx *Tx) ([]byte, error) {
	w, err := toWireTx(tx, true)
	if err != nil {
		return nil, fmt.Errorf("fsys: tx: %w: %v", ErrInvalid, err)
	}
	return canon.Marshal(w)
}

// UnmarshalTx decodes MarshalTx's output. It checks the encoding, not the
// signature or the capabilities (the host does). Errors wrap ErrInvalid.
func UnmarshalTx(data []byte) (*Tx, error) {
	var w wireTx
	if err := strictUnmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("fsys: tx: %w: %v", ErrInvalid, err)
	}
	tx, err := w.tx()
	if err != nil {
		return nil, fmt.Errorf("fsys: tx: %w: %v", ErrInvalid, err)
	}
	return tx, nil
}

func (w *wireTx) tx() (*Tx, error) {
	if w.V != FormatVersion {
		return nil, fmt.Errorf("version %d", w.V)
	}
	vol, err := paths.Parse(w.Volume)
	if err != nil {
		return nil, err
	}
	tx := &Tx{Volume: vol, Op: w.Op, Time: fromNano(w.Time), Sig: w.Sig}
	if len(w.Op) > 64 {
		return nil, errors.New("op too long")
	}
	for _, b := range w.Base {
		k, err := b.Key.key()
		if err != nil {
			return nil, err
		}
		tx.Base = append(tx.Base, Base{Key: k, Version: b.Version})
	}
	for i := range w.Put {
		if w.Put[i].Version != 0 {
			return nil, errors.New("put record with a version")
		}
		r, err := w.Put[i].record()
		if err != nil {
			return nil, err
		}
		tx.Put = append(tx.Put, r)
	}
	for _, k := range w.Delete {
		rk, err := k.key()
		if err != nil {
			return nil, err
		}
		tx.Delete = append(tx.Delete, rk)
	}
	for _, rc := range w.Readcaps {
		id, err := paths.ParseID(rc.Reader)
		if err != nil || rc.Ino == 0 || len(rc.Cap) == 0 {
			return nil, errors.New("bad readcap")
		}
		tx.Readcaps = append(tx.Readcaps, Readcap{Ino: rc.Ino, Reader: id, Cap: rc.Cap})
	}
	for _, rc := range w.Revoke {
		id, err := paths.ParseID(rc.Reader)
		if err != nil || rc.Ino == 0 || len(rc.Cap) != 0 {
			return nil, errors.New("bad revoked reader")
		}
		tx.RevokeReaders = append(tx.RevokeReaders, Readcap{Ino: rc.Ino, Reader: id})
	}
	if tx.Writecap, tx.HostCert, err = decodeTxCaps(w.Writecap, w.HostCert); err != nil {
		return nil, err
	}
	return tx, nil
}

func decodeTxCaps(wc, hc []byte) (*caps.Writecap, *caps.HostCert, error) {
	w, err := caps.Decode(wc)
	if err != nil {
		return nil, nil, err
	}
	c, err := caps.DecodeHostCert(hc)
	if err != nil {
		return nil, nil, err
	}
	return w, c, nil
}

// SignTx sets tx.Sig: key (the host key that tx.HostCert certifies) signs
// TxSigningBytes(tx).
func SignTx(tx *Tx, key crypto.PrivKey) error {
	m, err := TxSigningBytes(tx)
	if err != nil {
		return err
	}
	sig, err := key.Sign(m)
	if err != nil {
		return fmt.Errorf("fsys: sign tx: %w", err)
	}
	tx.Sig = sig
	return nil
}

// VerifyTxSig checks tx.HostCert at now and that tx.Sig is its host key's
// signature of the Tx. It does not check the writecap (the host checks it
// against the write points). Errors wrap ErrPermission.
func VerifyTxSig(tx *Tx, now time.Time) error {
	if tx.HostCert == nil || tx.Writecap == nil || len(tx.Sig) == 0 || len(tx.Sig) > 1024 {
		return fmt.Errorf("fsys: tx: unsigned: %w", ErrPermission)
	}
	if err := tx.HostCert.Verify(now); err != nil {
		return fmt.Errorf("fsys: tx: %w: %v", ErrPermission, err)
	}
	m, err := TxSigningBytes(tx)
	if err != nil {
		return err
	}
	ok, err := tx.HostCert.Host.Verify(m, tx.Sig)
	if err != nil || !ok {
		return fmt.Errorf("fsys: tx: bad signature: %w", ErrPermission)
	}
	return nil
}
