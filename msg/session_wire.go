package msg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/libp2p/go-libp2p/core/protocol"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/frame"
	"blocktree.dev/bt/paths"
)

// SessionProtocol is the libp2p protocol of sessions: one long-lived
// stream from a node to another carries its small messages (at most
// SessionMax bytes of payload), pipelined, and their answers, matched by
// ID (docs/msg.md, "Sessions"). Larger messages go on a ProtocolID stream
// of their own.
const SessionProtocol protocol.ID = "/blocktree/msg/session/1.0.0"

// SessionVersion is the session format version this build speaks.
const SessionVersion = 1

// SessionMax is the largest payload carried on a session; larger ones get
// a stream of their own, so they never hold up the small ones.
const SessionMax = 64 << 10

// Session frame types (docs/msg.md). A frame is uvarint(len) || type ||
// fields; integers are uvarints, byte strings uvarint(len) || bytes, and a
// frame's last field, its payload, runs to the frame's end.
const (
	frameHello   byte = 1 // opener: version, writecaps
	frameWelcome byte = 2 // responder: version, kind, window, target window, bytes, message
	frameSend    byte = 3 // id, deadline, to, writecap, payload
	frameConfirm byte = 4 // a send whose sender waits for its acceptance
	frameCall    byte = 5 // id, deadline, to, writecap, payload
	frameReply   byte = 6 // id, kind, message, size, first part of the payload
	frameAck     byte = 7 // ids: sends whose handlers returned
	frameMore    byte = 8 // id, the next part of a reply's payload
	// A group's host forwards a message to a member with its sender:
	// the request's fields, then from and from-node, then the payload.
	frameFwdSend    byte = 9
	frameFwdConfirm byte = 10
	frameFwdCall    byte = 11
)

// forwardedType returns the forwarded frame type of a request type, and
// back.
func forwardedType(typ byte) byte { return typ + (frameFwdSend - frameSend) }
func directType(typ byte) byte    { return typ - (frameFwdSend - frameSend) }

func isForwarded(typ byte) bool { return typ >= frameFwdSend && typ <= frameFwdCall }

// Session bounds.
const (
	// maxSessionFrame bounds a session frame: a request with the largest
	// header and payload.
	maxSessionFrame = SessionMax + MaxRequestHeader + 64
	// maxHelloCaps bounds the writecaps of a hello.
	maxHelloCaps = 16
	// maxHelloFrame bounds a hello.
	maxHelloFrame = maxHelloCaps*(caps.MaxEncodedSize+binary.MaxVarintLen32) + 16
	// maxAcks bounds the IDs of one ack frame.
	maxAcks = 1024
)

var sessionFraming = frame.Format{Prefix: frame.Uvarint, Max: max(maxSessionFrame, maxHelloFrame)}

// sreq is a decoded request frame.
type sreq struct {
	typ      byte
	id       uint64
	deadline int64  // Unix nanoseconds, 0: none
	to       string // when encoding
	toBytes  []byte // when decoding: aliases the frame
	writecap []byte
	from     []byte // forwarded: the sender's node path
	fromNode []byte // forwarded: the sender's node principal
	payload  []byte // aliases the frame
}

// srep is a decoded reply frame.
type srep struct {
	id      uint64
	kind    kind
	msg     string
	size    int64  // the whole reply's size
	payload []byte // its first part (all of it up to SessionMax); aliases the frame
}

// welcome is a decoded welcome frame.
type welcome struct {
	kind         kind
	window       int
	targetWindow int
	bytes        int64
	maxMessage   int64 // the receiver's Config.MaxMessage
	msg          string
}

// frameStart appends room for the longest length prefix and the type: the
// fields follow; frameEnd moves them behind the real prefix.
func frameStart(b []byte, typ byte) ([]byte, int) {
	start := len(b)
	return append(append(b, make([]byte, binary.MaxVarintLen32)...), typ), start
}

func frameEnd(b []byte, start int) []byte {
	return shiftBehindLength(b, start, len(b)-start-binary.MaxVarintLen32)
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

func appendString(b []byte, v string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

// appendHello appends a hello with the writecaps wcs.
func appendHello(b []byte, wcs [][]byte) []byte {
	b, start := frameStart(b, frameHello)
	b = binary.AppendUvarint(b, SessionVersion)
	b = binary.AppendUvarint(b, uint64(len(wcs)))
	for _, wc := range wcs {
		b = appendBytes(b, wc)
	}
	return frameEnd(b, start)
}

func appendWelcome(b []byte, w *welcome) []byte {
	b, start := frameStart(b, frameWelcome)
	b = binary.AppendUvarint(b, SessionVersion)
	b = binary.AppendUvarint(b, uint64(w.kind))
	b = binary.AppendUvarint(b, uint64(w.window))
	b = binary.AppendUvarint(b, uint64(w.targetWindow))
	b = binary.AppendUvarint(b, uint64(w.bytes))
	b = binary.AppendUvarint(b, uint64(w.maxMessage))
	b = append(b, truncate(strings.ToValidUTF8(w.msg, "\uFFFD"), MaxErrorMessage)...)
	return frameEnd(b, start)
}

// appendRequestFrame appends a request frame; payload is appended by the
// caller after it (it runs to the frame's end), then frameEnd.
func appendRequestHead(b []byte, q *sreq) ([]byte, int) {
	b, start := frameStart(b, q.typ)
	b = binary.AppendUvarint(b, q.id)
	b = binary.AppendUvarint(b, uint64(q.deadline))
	b = appendString(b, q.to)
	b = appendBytes(b, q.writecap)
	if isForwarded(q.typ) {
		b = appendBytes(b, q.from)
		b = appendBytes(b, q.fromNode)
	}
	return b, start
}

// appendReply appends a reply of size bytes whose first part is part.
func appendReply(b []byte, id uint64, k kind, msg string, size int64, part []byte) []byte {
	b, start := frameStart(b, frameReply)
	b = binary.AppendUvarint(b, id)
	b = binary.AppendUvarint(b, uint64(k))
	b = appendString(b, truncate(strings.ToValidUTF8(msg, "\uFFFD"), MaxErrorMessage))
	b = binary.AppendUvarint(b, uint64(size))
	b = append(b, part...)
	return frameEnd(b, start)
}

// appendMore appends the next part of reply id's payload.
func appendMore(b []byte, id uint64, part []byte) []byte {
	b, start := frameStart(b, frameMore)
	b = binary.AppendUvarint(b, id)
	b = append(b, part...)
	return frameEnd(b, start)
}

func appendAck(b []byte, ids []uint64) []byte {
	b, start := frameStart(b, frameAck)
	for _, id := range ids {
		b = binary.AppendUvarint(b, id)
	}
	return frameEnd(b, start)
}

// errSession is a session frame that breaks the format; the stream ends.
var errSession = errors.New("malformed session frame")

// cursor reads a frame's fields.
type cursor struct {
	b   []byte
	bad bool
}

func (c *cursor) uvarint() uint64 {
	v, n := binary.Uvarint(c.b)
	if n <= 0 {
		c.bad = true
		c.b = nil
		return 0
	}
	c.b = c.b[n:]
	return v
}

func (c *cursor) bytes(limit int) []byte {
	n := c.uvarint()
	if c.bad || n > uint64(len(c.b)) || n > uint64(limit) {
		c.bad = true
		c.b = nil
		return nil
	}
	v := c.b[:n:n]
	c.b = c.b[n:]
	return v
}

// frameType returns a frame's type and fields; an empty frame is
// malformed.
func frameType(f []byte) (byte, []byte, error) {
	if len(f) == 0 {
		return 0, nil, fmt.Errorf("an empty frame: %w", errSession)
	}
	return f[0], f[1:], nil
}

// decodeHello returns the writecaps of a hello's fields.
func decodeHello(fields []byte) ([][]byte, error) {
	c := cursor{b: fields}
	v := c.uvarint()
	n := c.uvarint()
	if c.bad {
		return nil, fmt.Errorf("hello: %w", errSession)
	}
	if v != SessionVersion {
		return nil, fmt.Errorf("hello of session version %d (this build speaks %d): %w", v, SessionVersion, ErrUnknownVersion)
	}
	if n > maxHelloCaps {
		return nil, fmt.Errorf("hello with %d writecaps, over %d: %w", n, maxHelloCaps, errSession)
	}
	wcs := make([][]byte, 0, n)
	for range n {
		wc := c.bytes(caps.MaxEncodedSize)
		if c.bad || len(wc) == 0 {
			return nil, fmt.Errorf("hello: writecap: %w", errSession)
		}
		wcs = append(wcs, wc)
	}
	if len(c.b) != 0 {
		return nil, fmt.Errorf("hello: %d bytes after the writecaps: %w", len(c.b), errSession)
	}
	return wcs, nil
}

func decodeWelcome(fields []byte) (welcome, error) {
	c := cursor{b: fields}
	v := c.uvarint()
	k := c.uvarint()
	win := c.uvarint()
	tw := c.uvarint()
	by := c.uvarint()
	mm := c.uvarint()
	switch {
	case c.bad:
		return welcome{}, fmt.Errorf("welcome: %w", errSession)
	case v != SessionVersion:
		return welcome{}, fmt.Errorf("welcome of session version %d (this build speaks %d): %w", v, SessionVersion, ErrUnknownVersion)
	case k > math.MaxUint8 || len(c.b) > MaxErrorMessage+len("…"):
		return welcome{}, fmt.Errorf("welcome: kind %d, message of %d bytes: %w", k, len(c.b), errSession)
	case k == uint64(kindOK) && (win == 0 || win > maxWindow || tw == 0 || tw > win || by < SessionMax || by > maxWindowBytes || mm > math.MaxInt64):
		return welcome{}, fmt.Errorf("welcome: window %d, target window %d, bytes %d, max message %d out of range: %w", win, tw, by, mm, errSession)
	}
	return welcome{kind: kind(k), window: int(win), targetWindow: int(tw), bytes: int64(by), maxMessage: int64(mm), msg: string(c.b)}, nil
}

// decodeRequestFrame decodes a send, confirmed send or call's fields.
func decodeRequestFrame(typ byte, fields []byte) (sreq, error) {
	c := cursor{b: fields}
	q := sreq{typ: typ}
	q.id = c.uvarint()
	dl := c.uvarint()
	to := c.bytes(paths.MaxPathLen)
	q.writecap = c.bytes(caps.MaxEncodedSize)
	if isForwarded(typ) {
		q.from = c.bytes(paths.MaxPathLen)
		q.fromNode = c.bytes(128)
	}
	switch {
	case c.bad:
		return sreq{}, fmt.Errorf("request: %w", errSession)
	case dl > math.MaxInt64:
		return sreq{}, fmt.Errorf("request: deadline %d: %w", dl, errSession)
	case len(c.b) > SessionMax:
		return sreq{}, fmt.Errorf("request: payload of %d bytes, over the session's %d: %w", len(c.b), SessionMax, errSession)
	}
	if len(q.writecap) == 0 {
		q.writecap = nil
	}
	q.deadline = int64(dl)
	q.toBytes = to
	q.payload = c.b
	return q, nil
}

func decodeReply(fields []byte) (srep, error) {
	c := cursor{b: fields}
	id := c.uvarint()
	k := c.uvarint()
	m := c.bytes(MaxErrorMessage + len("…"))
	size := c.uvarint()
	switch {
	case c.bad:
		return srep{}, fmt.Errorf("reply: %w", errSession)
	case k > math.MaxUint8 || size > math.MaxInt64:
		return srep{}, fmt.Errorf("reply: kind %d, size %d: %w", k, size, errSession)
	case k != uint64(kindOK) && size != 0:
		return srep{}, fmt.Errorf("reply: error kind %d with a body of %d bytes: %w", k, size, errSession)
	case len(c.b) > SessionMax || uint64(len(c.b)) > size || (size <= SessionMax && uint64(len(c.b)) != size):
		return srep{}, fmt.Errorf("reply: a first part of %d bytes for a reply of %d: %w", len(c.b), size, errSession)
	}
	return srep{id: id, kind: kind(k), msg: string(m), size: int64(size), payload: c.b}, nil
}

// decodeMore decodes the next part of a reply's payload.
func decodeMore(fields []byte) (id uint64, part []byte, err error) {
	c := cursor{b: fields}
	id = c.uvarint()
	if c.bad || len(c.b) == 0 || len(c.b) > SessionMax {
		return 0, nil, fmt.Errorf("reply part: %w", errSession)
	}
	return id, c.b, nil
}

// decodeAck appends an ack's IDs to ids.
func decodeAck(fields []byte, ids []uint64) ([]uint64, error) {
	c := cursor{b: fields}
	for len(c.b) > 0 {
		id := c.uvarint()
		if c.bad || len(ids) == maxAcks {
			return ids, fmt.Errorf("ack: %w", errSession)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return ids, fmt.Errorf("an ack of no ID: %w", errSession)
	}
	return ids, nil
}
