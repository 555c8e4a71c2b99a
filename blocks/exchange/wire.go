package exchange

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/frame"
)

// Wire format, version 1 (docs/exchange.md). Every message is one frame:
//
//	frame = version:u8 (1) || type:u8 || uvarint(len(body)) || body
//
// and every body has a fixed layout per type, bounded by maxBody. A frame
// of an unknown version or type, over its type's bound, or whose body does
// not decode exactly (no trailing bytes) is a protocol violation.
const wireVersion = 1

// frameType says what a frame's body holds.
type frameType uint8

const (
	ftWant      frameType = 1 // client → server: CIDs wanted, answered in order
	ftBlock     frameType = 2 // server → client: a wanted CID and its bytes
	ftHaveNot   frameType = 3 // server → client: a wanted CID it does not hold
	ftError     frameType = 4 // server → client: a refusal or failure; the stream ends
	ftReplicate frameType = 5 // client → server: part of a replication request
	ftProgress  frameType = 6 // server → client: replication progress (a keep-alive)
	ftAck       frameType = 7 // server → client: a replication (or unreplication) is done
	ftUnrepl    frameType = 8 // client → server: drop a replica pin
)

func (t frameType) String() string {
	switch t {
	case ftWant:
		return "want"
	case ftBlock:
		return "block"
	case ftHaveNot:
		return "have-not"
	case ftError:
		return "error"
	case ftReplicate:
		return "replicate"
	case ftProgress:
		return "progress"
	case ftAck:
		return "ack"
	case ftUnrepl:
		return "unreplicate"
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// Wire limits. They are part of the protocol: a frame beyond them is
// refused whatever the receiver's Config says.
const (
	// WireMaxWant bounds the CIDs of one want frame (and of one replicate
	// frame); Config.MaxWantBatch may not exceed it.
	WireMaxWant = 1024
	// maxCIDLen bounds one binary CID. A block CID (CIDv1 raw sha2-256) is
	// 36 bytes; longer ones are refused early.
	maxCIDLen = 64
	// maxErrText bounds an error frame's text.
	maxErrText = 1024
	// maxPinLen bounds a replication pin name (so that "replica:"+name is a
	// valid 255-byte pin name).
	maxPinLen = 255 - len(replicaPrefix)
	// MaxReplicate bounds the CIDs of one replication request.
	MaxReplicate = 1 << 18
)

// replicaPrefix starts the pin name under which a replica is pinned.
const replicaPrefix = "replica:"

// maxBody returns the largest body a frame of type t may carry, and false
// for an unknown type.
func maxBody(t frameType) (int, bool) {
	switch t {
	case ftWant:
		return binary.MaxVarintLen16 + WireMaxWant*(1+maxCIDLen), true
	case ftBlock:
		return 1 + maxCIDLen + blocks.MaxBlockSize, true
	case ftHaveNot:
		return 1 + maxCIDLen, true
	case ftError:
		return 1 + maxErrText, true
	case ftReplicate:
		return 1 + maxPinLen + 1 + maxCIDLen + 1 + binary.MaxVarintLen32 + binary.MaxVarintLen16 + WireMaxWant*(1+maxCIDLen), true
	case ftProgress:
		return 2 * binary.MaxVarintLen32, true
	case ftAck:
		return 0, true
	case ftUnrepl:
		return 1 + maxPinLen, true
	}
	return 0, false
}

// Sentinels of the wire layer; callers see them wrapped in ErrProtocol.
var (
	errVersion  = errors.New("unknown wire version")
	errType     = errors.New("unknown frame type")
	errOversize = errors.New("frame over its size limit")
	errMalform  = errors.New("malformed frame body")
)

// readFrame reads one frame from r. The body is read into buf when it
// fits (buf may be nil), else into a new slice; the returned body aliases
// it. Errors: io.EOF before the first byte; the reader's errors; and,
// wrapped in ErrProtocol, an unknown version or type or an oversized
// length, detected before the body is read.
func readFrame(r *bufio.Reader, buf []byte) (frameType, []byte, error) {
	v, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	if v != wireVersion {
		return 0, nil, fmt.Errorf("%w: %w %d", ErrProtocol, errVersion, v)
	}
	tb, err := r.ReadByte()
	if err != nil {
		return 0, nil, noEOF(err)
	}
	t := frameType(tb)
	limit, ok := maxBody(t)
	if !ok {
		return 0, nil, fmt.Errorf("%w: %w %d", ErrProtocol, errType, tb)
	}
	body, err := frame.Format{Prefix: frame.Uvarint, Max: limit, Empty: true}.Read(r, buf)
	switch {
	case err == nil:
	case errors.Is(err, frame.ErrTooLarge):
		return 0, nil, fmt.Errorf("%w: %s frame: %w: %w", ErrProtocol, t, errOversize, err)
	default:
		return 0, nil, noEOF(err)
	}
	return t, body, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendHeader appends a frame header for a body of n bytes.
func appendHeader(b []byte, t frameType, n int) []byte {
	b = append(b, wireVersion, byte(t))
	return frame.Format{Prefix: frame.Uvarint}.AppendLen(b, n)
}

// appendFrame appends a whole frame.
func appendFrame(b []byte, t frameType, body []byte) []byte {
	return append(appendHeader(b, t, len(body)), body...)
}

// appendCID appends u8 length || binary CID.
func appendCID(b []byte, c cid.Cid) []byte {
	if !c.Defined() {
		return append(b, 0)
	}
	cb := c.Bytes()
	return append(append(b, byte(len(cb))), cb...)
}

// cidReader walks a body.
type cidReader struct {
	b   []byte
	err error
}

func (r *cidReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %w: %s", ErrProtocol, errMalform, fmt.Sprintf(format, a...))
	}
}

func (r *cidReader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *cidReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail("truncated")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *cidReader) uvarint(max uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad uvarint")
		return 0
	}
	if n != len(binary.AppendUvarint(nil, v)) {
		r.fail("non-minimal uvarint")
		return 0
	}
	if v > max {
		r.fail("count %d over %d", v, max)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// cid reads u8 length || CID; a zero length is the undefined CID, allowed
// only when optional.
func (r *cidReader) cid(optional bool) cid.Cid {
	n := int(r.byte())
	if r.err != nil {
		return cid.Undef
	}
	if n == 0 {
		if !optional {
			r.fail("empty CID")
		}
		return cid.Undef
	}
	if n > maxCIDLen {
		r.fail("CID of %d bytes", n)
		return cid.Undef
	}
	raw := r.bytes(n)
	if r.err != nil {
		return cid.Undef
	}
	c, err := cid.Cast(raw)
	if err != nil {
		r.fail("CID: %v", err)
		return cid.Undef
	}
	if !bytes.Equal(c.Bytes(), raw) {
		r.fail("non-canonical CID")
		return cid.Undef
	}
	return c
}

func (r *cidReader) str(max int) string {
	n := int(r.byte())
	if n > max {
		r.fail("string of %d bytes over %d", n, max)
		return ""
	}
	s := r.bytes(n)
	if r.err == nil && !utf8.Valid(s) {
		r.fail("invalid UTF-8")
	}
	return string(s)
}

func (r *cidReader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}

// want body = uvarint(count) || count × cid ; 1 ≤ count ≤ WireMaxWant
func appendWant(b []byte, cs []cid.Cid) []byte {
	b = binary.AppendUvarint(b, uint64(len(cs)))
	for _, c := range cs {
		b = appendCID(b, c)
	}
	return b
}

func decodeWant(body []byte) ([]cid.Cid, error) {
	r := &cidReader{b: body}
	n := r.uvarint(WireMaxWant)
	if r.err == nil && n == 0 {
		r.fail("empty want list")
	}
	var cs []cid.Cid
	if r.err == nil {
		cs = make([]cid.Cid, 0, n)
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		cs = append(cs, r.cid(false))
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return cs, nil
}

// block body = cid || data (the rest; ≤ MaxBlockSize by the frame bound)
func decodeBlock(body []byte) (cid.Cid, []byte, error) {
	r := &cidReader{b: body}
	c := r.cid(false)
	if r.err != nil {
		return cid.Undef, nil, r.err
	}
	return c, r.b, nil
}

// have-not body = cid
func decodeHaveNot(body []byte) (cid.Cid, error) {
	r := &cidReader{b: body}
	c := r.cid(false)
	return c, r.end()
}

// errCode says why a server refused or failed.
type errCode uint8

const (
	codeDenied   errCode = 1 // the peer is not verified or not of this domain
	codeBusy     errCode = 2 // ServeConcurrency or the per-peer stream bound reached
	codeBad      errCode = 3 // the client broke the protocol
	codeClosed   errCode = 4 // the server is shutting down
	codeFailed   errCode = 5 // a replication could not be completed
	codeInternal errCode = 6 // the server's store failed
)

// error body = code:u8 || text (UTF-8, ≤ maxErrText bytes)
func appendError(b []byte, code errCode, text string) []byte {
	if len(text) > maxErrText {
		text = text[:maxErrText]
		for !utf8.ValidString(text) {
			text = text[:len(text)-1]
		}
	}
	return append(append(b, byte(code)), text...)
}

func decodeError(body []byte) (errCode, string, error) {
	if len(body) == 0 {
		return 0, "", fmt.Errorf("%w: %w: empty error frame", ErrProtocol, errMalform)
	}
	if len(body)-1 > maxErrText || !utf8.Valid(body[1:]) {
		return 0, "", fmt.Errorf("%w: %w: error text", ErrProtocol, errMalform)
	}
	return errCode(body[0]), string(body[1:]), nil
}

// replicate body = pin:str || root:cid-or-0 || more:u8 (0|1) ||
// uvarint(total) || uvarint(count) || count × cid
//
// A request is a run of replicate frames with the same pin, root and
// total, the last one with more = 0; the counts add up to total.
type replicateFrame struct {
	Pin   string
	Root  cid.Cid
	More  bool
	Total int
	CIDs  []cid.Cid
}

func appendReplicate(b []byte, f *replicateFrame) []byte {
	b = append(append(b, byte(len(f.Pin))), f.Pin...)
	b = appendCID(b, f.Root)
	more := byte(0)
	if f.More {
		more = 1
	}
	b = append(b, more)
	b = binary.AppendUvarint(b, uint64(f.Total))
	return appendWant(b, f.CIDs)
}

func decodeReplicate(body []byte) (*replicateFrame, error) {
	r := &cidReader{b: body}
	f := &replicateFrame{}
	f.Pin = r.str(maxPinLen)
	if r.err == nil && f.Pin == "" {
		r.fail("empty pin name")
	}
	if r.err == nil && bytes.IndexByte([]byte(f.Pin), 0) >= 0 {
		r.fail("NUL in pin name")
	}
	f.Root = r.cid(true)
	switch m := r.byte(); {
	case r.err != nil:
	case m == 1:
		f.More = true
	case m != 0:
		r.fail("more flag %d", m)
	}
	f.Total = int(r.uvarint(MaxReplicate))
	n := r.uvarint(WireMaxWant)
	if r.err == nil && n == 0 && f.Total != 0 {
		r.fail("empty CID list")
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		f.CIDs = append(f.CIDs, r.cid(false))
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	if len(f.CIDs) > f.Total {
		return nil, fmt.Errorf("%w: %w: %d CIDs in a request of %d", ErrProtocol, errMalform, len(f.CIDs), f.Total)
	}
	return f, nil
}

// progress body = uvarint(done) || uvarint(total)
func appendProgress(b []byte, done, total int) []byte {
	return binary.AppendUvarint(binary.AppendUvarint(b, uint64(done)), uint64(total))
}

func decodeProgress(body []byte) (done, total int, err error) {
	r := &cidReader{b: body}
	d := r.uvarint(MaxReplicate)
	t := r.uvarint(MaxReplicate)
	if err := r.end(); err != nil {
		return 0, 0, err
	}
	if d > t {
		return 0, 0, fmt.Errorf("%w: %w: progress %d of %d", ErrProtocol, errMalform, d, t)
	}
	return int(d), int(t), nil
}

// unreplicate body = pin:str
func decodeUnrepl(body []byte) (string, error) {
	r := &cidReader{b: body}
	pin := r.str(maxPinLen)
	if r.err == nil && (pin == "" || bytes.IndexByte([]byte(pin), 0) >= 0) {
		r.fail("bad pin name")
	}
	return pin, r.end()
}

// checkPin checks a replication pin name on the sending side.
func checkPin(pin string) error {
	if pin == "" || len(pin) > maxPinLen || !utf8.ValidString(pin) || bytes.IndexByte([]byte(pin), 0) >= 0 {
		return fmt.Errorf("pin name %q: 1..%d bytes of UTF-8 without NUL: %w", pin, maxPinLen, blocks.ErrBadPin)
	}
	return nil
}
