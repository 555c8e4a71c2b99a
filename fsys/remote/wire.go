package remote

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/internal/frame"
	"blocktree.dev/bt/paths"
)

// WireVersion is the frame format version this build writes and the only
// one it reads (docs/fs.md, "Remote hosts").
const WireVersion = 1

// Wire limits. Every frame is bounded by MaxFrame before it is read; the
// counts below bound what one frame or one call may carry.
const (
	// MaxFrame bounds one frame's body (the canonical CBOR), as canon does.
	MaxFrame = canon.MaxSize
	// MaxKeys bounds the record keys of one Get request.
	MaxKeys = 4096
	// MaxRecordBytes bounds one record's Sealed plus its encoded block
	// CIDs, so that any record fits in one frame.
	MaxRecordBytes = 768 << 10
	// MaxTxRecords bounds the records one Commit puts.
	MaxTxRecords = 1 << 16
	// MaxTxBytes bounds the encoded size of one Commit (header and record
	// frames).
	MaxTxBytes = 64 << 20
	// MaxLog bounds the entries of one Log answer.
	MaxLog = 1000
	// MaxReadcaps bounds the readcaps of one Readcaps answer.
	MaxReadcaps = 4096
	// batchBytes is the target size of one frame of records.
	batchBytes = 512 << 10
	// batchCount bounds the records of one frame (canon refuses arrays
	// over 4096 elements).
	batchCount = 1024
)

// Ops: what a request asks.
const (
	opInfo     uint8 = 1
	opGet      uint8 = 2
	opList     uint8 = 3
	opCommit   uint8 = 4
	opReadcaps uint8 = 5
	opLog      uint8 = 6
	opWatch    uint8 = 7
	// opSync asks the host to make every version up to At durable
	// (fsys.Syncer.Sync). Added after WireVersion 1 was released, without
	// a version bump: a host that predates it refuses it (kindProtocol,
	// "unknown op"), and the client then knows every commit of that host
	// is durable already.
	opSync uint8 = 8
)

// Error kinds carried in responses; each maps back to one fsys sentinel
// (kindErr).
const (
	kindOK           uint8 = 0
	kindNotExist     uint8 = 1
	kindExist        uint8 = 2
	kindNotDir       uint8 = 3
	kindIsDir        uint8 = 4
	kindNotEmpty     uint8 = 5
	kindPermission   uint8 = 6
	kindConflict     uint8 = 7
	kindUnavailable  uint8 = 8
	kindInvalid      uint8 = 9
	kindNameTooLong  uint8 = 10
	kindNoSpace      uint8 = 11
	kindCrossVolume  uint8 = 12
	kindNotSupported uint8 = 13
	kindIntegrity    uint8 = 14
	kindBusy         uint8 = 15 // → ErrUnavailable
	kindNoVolume     uint8 = 16 // the peer does not host the volume → ErrUnavailable
	kindProtocol     uint8 = 17 // → ErrInvalid
	kindInternal     uint8 = 18 // → ErrUnavailable
	maxKind                = kindInternal
)

var kindSentinels = map[uint8]error{
	kindNotExist: fsys.ErrNotExist, kindExist: fsys.ErrExist, kindNotDir: fsys.ErrNotDir,
	kindIsDir: fsys.ErrIsDir, kindNotEmpty: fsys.ErrNotEmpty, kindPermission: fsys.ErrPermission,
	kindConflict: fsys.ErrConflict, kindUnavailable: fsys.ErrUnavailable, kindInvalid: fsys.ErrInvalid,
	kindNameTooLong: fsys.ErrNameTooLong, kindNoSpace: fsys.ErrNoSpace, kindCrossVolume: fsys.ErrCrossVolume,
	kindNotSupported: fsys.ErrNotSupported, kindIntegrity: fsys.ErrIntegrity,
	kindBusy: fsys.ErrUnavailable, kindNoVolume: fsys.ErrUnavailable, kindProtocol: fsys.ErrInvalid,
	kindInternal: fsys.ErrUnavailable,
}

// errKind returns the kind that carries err (an error from a host).
func errKind(err error) uint8 {
	for _, k := range []uint8{kindNotExist, kindExist, kindNotDir, kindIsDir, kindNotEmpty, kindPermission,
		kindConflict, kindUnavailable, kindInvalid, kindNameTooLong, kindNoSpace, kindCrossVolume,
		kindNotSupported, kindIntegrity} {
		if errors.Is(err, kindSentinels[k]) {
			return k
		}
	}
	return kindInternal
}

// kindErr turns a response's kind and message back into an error wrapping
// the kind's fsys sentinel.
func kindErr(k uint8, msg string) error {
	s, ok := kindSentinels[k]
	if !ok {
		return fmt.Errorf("%s (unknown error kind %d): %w", msg, k, fsys.ErrUnavailable)
	}
	if msg == "" && k != kindProtocol {
		return s
	}
	return &remoteError{msg: msg, sentinel: s, kind: k}
}

// remoteError is an error the host reported: its message as the host
// wrote it, matching the sentinel of its kind with errors.Is.
type remoteError struct {
	msg      string
	sentinel error
	kind     uint8
}

// refusedAsProtocol reports whether err is the host's refusal of a
// request it could not parse: what a host that predates opSync or
// NoSync answers to them.
func refusedAsProtocol(err error) bool {
	var re *remoteError
	return errors.As(err, &re) && re.kind == kindProtocol
}

func (e *remoteError) Error() string { return "host: " + e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// errProtocol: a frame broke the wire format.
var errProtocol = errors.New("fs protocol violation")

// --- frames ---

// writeFrame writes a uvarint length and the body, 1 to MaxFrame bytes.
func writeFrame(w io.Writer, body []byte) error {
	b, err := frame.Format{Prefix: frame.Uvarint, Max: MaxFrame}.Append(make([]byte, 0, len(body)+binary.MaxVarintLen64), body)
	if err != nil {
		return fmt.Errorf("%w: %w", errProtocol, err)
	}
	_, err = w.Write(b)
	return err
}

// readFrame reads one frame of 1 to max bytes.
func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	b, err := frame.Format{Prefix: frame.Uvarint, Max: max}.Read(r, nil)
	if errors.Is(err, frame.ErrTooLarge) || errors.Is(err, frame.ErrEmpty) {
		return nil, fmt.Errorf("%w: %w", errProtocol, err)
	}
	return b, err
}

// --- request and response ---

// wireRequest is the first frame of every stream.
type wireRequest struct {
	V      uint    `cbor:"v"`
	Op     uint8   `cbor:"op"`
	Vol    string  `cbor:"vol"`
	At     uint64  `cbor:"at,omitempty"`
	Keys   []byte  `cbor:"keys,omitempty"` // Get: RecordKeys, keySize bytes each
	Dir    uint64  `cbor:"dir,omitempty"`
	Reader string  `cbor:"reader,omitempty"`
	Limit  uint32  `cbor:"limit,omitempty"`
	After  uint64  `cbor:"after,omitempty"`
	Tx     *wireTx `cbor:"tx,omitempty"` // Commit: the Tx less Put, whose records follow in frames
	// NoSync, on a Commit, asks for fsys.Syncer.CommitNoSync. Absent
	// (false) the frame is byte for byte the WireVersion 1 commit; a host
	// that predates the field refuses it (kindProtocol), and the client
	// then commits durably.
	NoSync bool `cbor:"nosync,omitempty"`
}

// request is a decoded wireRequest.
type request struct {
	Op     uint8
	Vol    paths.Path
	At     uint64
	Keys   []fsys.RecordKey
	Dir    fsys.Ino
	Reader paths.ID
	Limit  int
	After  uint64
	Tx     *fsys.Tx // Put empty; nPut records follow
	NPut   int
	NoSync bool // Commit without waiting for durability
}

// wireResponse is every frame the server sends.
type wireResponse struct {
	V      uint           `cbor:"v"`
	Kind   uint8          `cbor:"kind,omitempty"`
	Msg    string         `cbor:"msg,omitempty"`
	Info   *wireInfo      `cbor:"info,omitempty"`
	Ver    uint64         `cbor:"ver,omitempty"`
	Recs   []wireRecord   `cbor:"recs,omitempty"`
	More   bool           `cbor:"more,omitempty"` // more record frames follow
	Caps   []wireReadcap  `cbor:"caps,omitempty"`
	Log    []wireLogEntry `cbor:"log,omitempty"`
	Change *wireChange    `cbor:"change,omitempty"`
}

// wireRecords is a frame of records that follows a Commit request.
type wireRecords struct {
	V    uint         `cbor:"v"`
	Recs []wireRecord `cbor:"recs"`
}

type wireInfo struct {
	Path    string `cbor:"path"`
	Root    uint64 `cbor:"root"`
	Version uint64 `cbor:"ver"`
	Host    string `cbor:"host"`
	// Hostcap is the writecap by which the hosting node's key holds the
	// volume path: the client checks it against the node the connection
	// verified (the hosting proof).
	Hostcap []byte `cbor:"hostcap"`
}

// Records keep the nil-ness of their byte slices (no omitempty): a
// signed Tx must decode to the very value the writer signed.
type wireRecord struct {
	Ino    uint64 `cbor:"ino"`
	Name   []byte `cbor:"name,omitempty"` // 32 bytes for an entry
	Parent uint64 `cbor:"parent,omitempty"`
	Ver    uint64 `cbor:"ver,omitempty"`
	Sealed []byte `cbor:"sealed"`
	Blocks []byte `cbor:"blocks"` // concatenated binary CIDs
	Grant  string `cbor:"grant,omitempty"`
}

type wireTx struct {
	Volume   string        `cbor:"vol"`
	Base     []byte        `cbor:"base"`   // baseSize bytes each
	NPut     uint32        `cbor:"nput"`   // records that follow
	PutNil   bool          `cbor:"putnil"` // Put is nil (not merely empty)
	Delete   []byte        `cbor:"del"`    // keySize bytes each
	Readcaps []wireReadcap `cbor:"caps"`
	Revoke   []wireReadcap `cbor:"revoke"`
	Op       string        `cbor:"op"`
	Time     *wireTime     `cbor:"time"`
	Writecap []byte        `cbor:"writecap"`
	HostCert []byte        `cbor:"hostcert"`
	Sig      []byte        `cbor:"sig"`
}

// wireTime keeps an instant and its zone offset, so a time decodes to one
// that formats the same way (RFC 3339) as the one encoded.
type wireTime struct {
	NS  int64 `cbor:"ns"`
	Off int32 `cbor:"off,omitempty"`
}

type wireReadcap struct {
	Ino    uint64 `cbor:"ino"`
	Reader string `cbor:"reader"`
	Cap    []byte `cbor:"cap"`
}

type wireLogEntry struct {
	Version uint64    `cbor:"ver"`
	Time    *wireTime `cbor:"time"`
	Writer  string    `cbor:"writer"`
	Op      string    `cbor:"op"`
}

type wireChange struct {
	Version uint64 `cbor:"ver"`
	Keys    []byte `cbor:"keys"`
}

const (
	keySize  = 8 + 32
	baseSize = keySize + 8
)

// --- conversions ---

func encTime(t time.Time) *wireTime {
	if t.IsZero() {
		return nil
	}
	_, off := t.Zone()
	return &wireTime{NS: t.UnixNano(), Off: int32(off)}
}

func decTime(w *wireTime) time.Time {
	if w == nil {
		return time.Time{}
	}
	t := time.Unix(0, w.NS)
	if w.Off == 0 {
		return t.UTC()
	}
	return t.In(time.FixedZone("", int(w.Off)))
}

func appendKey(b []byte, k fsys.RecordKey) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(k.Ino))
	return append(b, k.Name[:]...)
}

func encKeys(ks []fsys.RecordKey) []byte {
	if ks == nil {
		return nil
	}
	b := make([]byte, 0, len(ks)*keySize)
	for _, k := range ks {
		b = appendKey(b, k)
	}
	return b
}

func decKeys(b []byte, what string) ([]fsys.RecordKey, error) {
	if b == nil {
		return nil, nil
	}
	if len(b)%keySize != 0 {
		return nil, fmt.Errorf("%s: %d bytes is not a whole number of %d-byte keys: %w", what, len(b), keySize, errProtocol)
	}
	out := make([]fsys.RecordKey, len(b)/keySize)
	for i := range out {
		e := b[i*keySize:]
		out[i].Ino = fsys.Ino(binary.BigEndian.Uint64(e))
		copy(out[i].Name[:], e[8:keySize])
		if out[i].Ino == 0 {
			return nil, fmt.Errorf("%s: key %d has inode 0: %w", what, i, errProtocol)
		}
	}
	return out, nil
}

func encBases(bs []fsys.Base) []byte {
	if bs == nil {
		return nil
	}
	b := make([]byte, 0, len(bs)*baseSize)
	for _, x := range bs {
		b = binary.BigEndian.AppendUint64(appendKey(b, x.Key), x.Version)
	}
	return b
}

func decBases(b []byte) ([]fsys.Base, error) {
	if b == nil {
		return nil, nil
	}
	if len(b)%baseSize != 0 {
		return nil, fmt.Errorf("tx base: %d bytes is not a whole number of %d-byte bases: %w", len(b), baseSize, errProtocol)
	}
	out := make([]fsys.Base, len(b)/baseSize)
	for i := range out {
		e := b[i*baseSize:]
		ks, err := decKeys(e[:keySize], "tx base")
		if err != nil {
			return nil, err
		}
		out[i] = fsys.Base{Key: ks[0], Version: binary.BigEndian.Uint64(e[keySize:baseSize])}
	}
	return out, nil
}

func encCIDs(cs []cid.Cid) []byte {
	if cs == nil {
		return nil
	}
	b := []byte{}
	for _, c := range cs {
		b = append(b, c.Bytes()...)
	}
	return b
}

func decCIDs(b []byte) ([]cid.Cid, error) {
	if b == nil {
		return nil, nil
	}
	out := []cid.Cid{}
	for len(b) > 0 {
		n, c, err := cid.CidFromBytes(b)
		if err != nil {
			return nil, fmt.Errorf("record blocks: %v: %w", err, errProtocol)
		}
		out = append(out, c)
		b = b[n:]
	}
	return out, nil
}

func encRecord(r *fsys.Record) (wireRecord, error) {
	w := wireRecord{Ino: uint64(r.Key.Ino), Parent: uint64(r.Parent), Ver: r.Version, Sealed: r.Sealed,
		Blocks: encCIDs(r.Blocks), Grant: r.Grant.String()}
	if r.Key.IsEntry() {
		w.Name = append([]byte(nil), r.Key.Name[:]...)
	}
	if len(w.Sealed)+len(w.Blocks) > MaxRecordBytes {
		return w, fmt.Errorf("record of inode %d is %d bytes, over the limit of %d: %w", r.Key.Ino, len(w.Sealed)+len(w.Blocks), MaxRecordBytes, fsys.ErrNoSpace)
	}
	return w, nil
}

func decRecord(w *wireRecord) (fsys.Record, error) {
	var r fsys.Record
	if w.Ino == 0 {
		return r, fmt.Errorf("record with inode 0: %w", errProtocol)
	}
	r.Key.Ino = fsys.Ino(w.Ino)
	switch len(w.Name) {
	case 0:
	case 32:
		copy(r.Key.Name[:], w.Name)
		if !r.Key.IsEntry() {
			return r, fmt.Errorf("record name of zeros: %w", errProtocol)
		}
	default:
		return r, fmt.Errorf("record name of %d bytes, want 32: %w", len(w.Name), errProtocol)
	}
	if len(w.Sealed)+len(w.Blocks) > MaxRecordBytes {
		return r, fmt.Errorf("record of %d bytes, over the limit of %d: %w", len(w.Sealed)+len(w.Blocks), MaxRecordBytes, errProtocol)
	}
	r.Parent, r.Version, r.Sealed = fsys.Ino(w.Parent), w.Ver, w.Sealed
	var err error
	if r.Blocks, err = decCIDs(w.Blocks); err != nil {
		return r, err
	}
	if w.Grant != "" {
		if r.Grant, err = paths.Parse(w.Grant); err != nil {
			return r, fmt.Errorf("record grant: %v: %w", err, errProtocol)
		}
	}
	return r, nil
}

func encReadcaps(rs []fsys.Readcap) []wireReadcap {
	if rs == nil {
		return nil
	}
	out := make([]wireReadcap, len(rs))
	for i, r := range rs {
		out[i] = wireReadcap{Ino: uint64(r.Ino), Reader: string(r.Reader), Cap: r.Cap}
	}
	return out
}

func decReadcaps(ws []wireReadcap) ([]fsys.Readcap, error) {
	if ws == nil {
		return nil, nil
	}
	out := make([]fsys.Readcap, len(ws))
	for i, w := range ws {
		id, err := paths.ParseID(w.Reader)
		if err != nil {
			return nil, fmt.Errorf("readcap reader: %v: %w", err, errProtocol)
		}
		out[i] = fsys.Readcap{Ino: fsys.Ino(w.Ino), Reader: id, Cap: w.Cap}
	}
	return out, nil
}

// encTx encodes tx less its Put records, which go in record frames.
func encTx(tx *fsys.Tx) (*wireTx, error) {
	if len(tx.Put) > MaxTxRecords {
		return nil, fmt.Errorf("a transaction of %d records is over the limit of %d: %w", len(tx.Put), MaxTxRecords, fsys.ErrInvalid)
	}
	w := &wireTx{Volume: tx.Volume.String(), Base: encBases(tx.Base), NPut: uint32(len(tx.Put)), PutNil: tx.Put == nil,
		Delete: encKeys(tx.Delete), Readcaps: encReadcaps(tx.Readcaps), Revoke: encReadcaps(tx.RevokeReaders),
		Op: tx.Op, Time: encTime(tx.Time), Sig: tx.Sig}
	if tx.Writecap != nil {
		w.Writecap = tx.Writecap.Marshal()
	}
	if tx.HostCert != nil {
		w.HostCert = tx.HostCert.Marshal()
	}
	return w, nil
}

// decTx decodes a Tx header; its Put records follow.
func decTx(w *wireTx) (*fsys.Tx, int, error) {
	tx := &fsys.Tx{Op: w.Op, Time: decTime(w.Time), Sig: w.Sig}
	var err error
	if tx.Volume, err = paths.Parse(w.Volume); err != nil {
		return nil, 0, fmt.Errorf("tx volume: %v: %w", err, errProtocol)
	}
	if w.NPut > MaxTxRecords {
		return nil, 0, fmt.Errorf("tx of %d records, over the limit of %d: %w", w.NPut, MaxTxRecords, errProtocol)
	}
	if w.PutNil && w.NPut > 0 {
		return nil, 0, fmt.Errorf("tx: nil Put with %d records: %w", w.NPut, errProtocol)
	}
	if !w.PutNil {
		tx.Put = make([]fsys.Record, 0, min(w.NPut, batchCount))
	}
	if tx.Base, err = decBases(w.Base); err != nil {
		return nil, 0, err
	}
	if tx.Delete, err = decKeys(w.Delete, "tx delete"); err != nil {
		return nil, 0, err
	}
	if tx.Readcaps, err = decReadcaps(w.Readcaps); err != nil {
		return nil, 0, err
	}
	if tx.RevokeReaders, err = decReadcaps(w.Revoke); err != nil {
		return nil, 0, err
	}
	if w.Writecap != nil {
		if tx.Writecap, err = caps.Decode(w.Writecap); err != nil {
			return nil, 0, fmt.Errorf("tx writecap: %w: %w", err, fsys.ErrPermission)
		}
	}
	if w.HostCert != nil {
		if tx.HostCert, err = caps.DecodeHostCert(w.HostCert); err != nil {
			return nil, 0, fmt.Errorf("tx host certificate: %w: %w", err, fsys.ErrPermission)
		}
	}
	return tx, int(w.NPut), nil
}

// --- encode and decode whole frames ---

func encodeRequest(q *request) ([]byte, error) {
	w := wireRequest{V: WireVersion, Op: q.Op, Vol: q.Vol.String(), At: q.At, Keys: encKeys(q.Keys), Dir: uint64(q.Dir),
		Reader: string(q.Reader), Limit: uint32(q.Limit), After: q.After, NoSync: q.NoSync}
	if len(q.Keys) == 0 {
		w.Keys = nil
	}
	if q.Tx != nil {
		t, err := encTx(q.Tx)
		if err != nil {
			return nil, err
		}
		w.Tx = t
	}
	return canon.Marshal(&w)
}

// decodeRequest parses and checks a request frame. Errors wrap errProtocol
// (or a caps error for a Tx's writecap or certificate).
func decodeRequest(data []byte) (*request, error) {
	var w wireRequest
	if err := unmarshal(data, &w, "request"); err != nil {
		return nil, err
	}
	if w.V != WireVersion {
		return nil, fmt.Errorf("request version %d, this host speaks %d: %w", w.V, WireVersion, errProtocol)
	}
	q := &request{Op: w.Op, At: w.At, Dir: fsys.Ino(w.Dir), Limit: int(w.Limit), After: w.After, NoSync: w.NoSync}
	var err error
	if q.Vol, err = paths.Parse(w.Vol); err != nil {
		return nil, fmt.Errorf("request volume: %v: %w", err, errProtocol)
	}
	if q.Keys, err = decKeys(w.Keys, "request keys"); err != nil {
		return nil, err
	}
	if len(q.Keys) > MaxKeys {
		return nil, fmt.Errorf("request of %d keys, over the limit of %d: %w", len(q.Keys), MaxKeys, errProtocol)
	}
	if w.Reader != "" {
		if q.Reader, err = paths.ParseID(w.Reader); err != nil {
			return nil, fmt.Errorf("request reader: %v: %w", err, errProtocol)
		}
	}
	switch q.Op {
	case opInfo, opList, opReadcaps, opWatch:
	case opSync:
		if q.At == 0 || len(q.Keys) > 0 {
			return nil, fmt.Errorf("sync wants a version and no keys: %w", errProtocol)
		}
	case opGet:
		if len(q.Keys) == 0 {
			return nil, fmt.Errorf("get without keys: %w", errProtocol)
		}
	case opLog:
		if len(q.Keys) != 1 || q.Limit < 0 || q.Limit > MaxLog {
			return nil, fmt.Errorf("log wants one key and a limit up to %d: %w", MaxLog, errProtocol)
		}
	case opCommit:
		if w.Tx == nil {
			return nil, fmt.Errorf("commit without a transaction: %w", errProtocol)
		}
		if q.Tx, q.NPut, err = decTx(w.Tx); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown op %d: %w", q.Op, errProtocol)
	}
	if q.Op != opCommit && (w.Tx != nil || w.NoSync) {
		return nil, fmt.Errorf("a transaction or nosync on op %d: %w", q.Op, errProtocol)
	}
	if q.Op == opReadcaps && q.Reader == "" {
		return nil, fmt.Errorf("readcaps without a reader: %w", errProtocol)
	}
	return q, nil
}

func encodeResponse(r *wireResponse) ([]byte, error) {
	r.V = WireVersion
	return canon.Marshal(r)
}

// decodeResponse parses a response frame. Errors wrap errProtocol.
func decodeResponse(data []byte) (*wireResponse, error) {
	var r wireResponse
	if err := unmarshal(data, &r, "response"); err != nil {
		return nil, err
	}
	if r.V != WireVersion {
		return nil, fmt.Errorf("response version %d, this client speaks %d: %w", r.V, WireVersion, errProtocol)
	}
	if r.Kind > maxKind {
		return nil, fmt.Errorf("response of unknown kind %d: %w", r.Kind, errProtocol)
	}
	return &r, nil
}

// decodeRecords decodes a wire record list.
func decodeRecords(ws []wireRecord) ([]fsys.Record, error) {
	out := make([]fsys.Record, 0, len(ws))
	for i := range ws {
		r, err := decRecord(&ws[i])
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// decodeRecordsFrame parses a frame of Commit records.
func decodeRecordsFrame(data []byte) ([]fsys.Record, error) {
	var w wireRecords
	if err := unmarshal(data, &w, "records"); err != nil {
		return nil, err
	}
	if w.V != WireVersion {
		return nil, fmt.Errorf("records version %d: %w", w.V, errProtocol)
	}
	if len(w.Recs) == 0 {
		return nil, fmt.Errorf("empty records frame: %w", errProtocol)
	}
	return decodeRecords(w.Recs)
}

func decodeInfo(w *wireInfo) (fsys.VolumeInfo, *caps.Writecap, error) {
	var vi fsys.VolumeInfo
	var err error
	if vi.Path, err = paths.Parse(w.Path); err != nil {
		return vi, nil, fmt.Errorf("info path: %v: %w", err, errProtocol)
	}
	if vi.Host, err = paths.Parse(w.Host); err != nil {
		return vi, nil, fmt.Errorf("info host: %v: %w", err, errProtocol)
	}
	vi.Root, vi.Version = fsys.Ino(w.Root), w.Version
	if vi.Root == 0 {
		return vi, nil, fmt.Errorf("info: root inode 0: %w", errProtocol)
	}
	hc, err := caps.Decode(w.Hostcap)
	if err != nil {
		return vi, nil, fmt.Errorf("info: hosting writecap: %w: %w", err, fsys.ErrPermission)
	}
	return vi, hc, nil
}

func decodeLog(ws []wireLogEntry) ([]fsys.LogEntry, error) {
	out := make([]fsys.LogEntry, 0, len(ws))
	for _, w := range ws {
		e := fsys.LogEntry{Version: w.Version, Time: decTime(w.Time), Op: w.Op}
		if w.Writer != "" {
			p, err := paths.Parse(w.Writer)
			if err != nil {
				return nil, fmt.Errorf("log writer: %v: %w", err, errProtocol)
			}
			e.Writer = p
		}
		out = append(out, e)
	}
	return out, nil
}

func encodeLog(es []fsys.LogEntry) []wireLogEntry {
	out := make([]wireLogEntry, 0, len(es))
	for _, e := range es {
		out = append(out, wireLogEntry{Version: e.Version, Time: encTime(e.Time), Writer: e.Writer.String(), Op: e.Op})
	}
	return out
}

func unmarshal(data []byte, v any, what string) error {
	if len(data) > MaxFrame {
		return fmt.Errorf("%s of %d bytes, over %d: %w", what, len(data), MaxFrame, errProtocol)
	}
	if err := canon.Unmarshal(data, v); err != nil {
		if ver, verr := canon.Version(data); verr == nil && ver != WireVersion {
			return fmt.Errorf("%s version %d, this build speaks %d: %w", what, ver, WireVersion, errProtocol)
		}
		return fmt.Errorf("%s: %v: %w", what, err, errProtocol)
	}
	return nil
}

func encodeCanon(v any) ([]byte, error) { return canon.Marshal(v) }
