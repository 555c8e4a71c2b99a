package actors

import (
	"bufio"
	"errors"
	"fmt"
	"time"

	"blocktree.dev/bt/internal/canon"
	framing "blocktree.dev/bt/internal/frame"
	"blocktree.dev/bt/paths"
)

// Frames of the stream protocol (StreamProtocol, docs/actors.md "Stream
// transport"): each is a 4-byte big-endian length and that many bytes of
// canonical CBOR, a frame document of version FrameVersion. Requests and
// replies are the request and reply documents of the msg path with a
// request ID (and a deadline) added; the other kinds run the stream.

// FrameVersion is the version of the stream frames this build writes and
// the only one it reads.
const FrameVersion = 1

// Frame kinds; 0–2 are the request kinds of wireMsg.
const (
	kindReply   = 3 // answers the request with the same ID
	kindAck     = 4 // tells queued at the receiver, by ID
	kindHello   = 5 // the opener's first frame
	kindWelcome = 6 // the receiver's answer to hello: limits, or a refusal
)

// Codes only frames carry (a welcome's refusal).
const (
	codeDenied = 12 // not authorised: msg.ErrDenied
	codeBusy   = 13 // too many streams from the peer: msg.ErrBusy
)

// Limits of the frame format.
const (
	// maxFrame bounds a frame document: the runtime's largest message.
	maxFrame = MaxEnvelope
	// maxAcks bounds the IDs of one ack frame.
	maxAcks = 1024
	// maxWritecap bounds a hello's writecap.
	maxWritecap = 64 << 10
)

// wireFrame is one frame of the stream protocol, version 1. Fields keep
// the keys and meanings of wireMsg and wireReply.
type wireFrame struct {
	V    uint64     `cbor:"v"`
	K    uint64     `cbor:"k"`              // kindSend … kindWelcome
	I    uint64     `cbor:"i,omitempty"`    // request ID: requests and replies
	D    int64      `cbor:"d,omitempty"`    // requests: the sender's deadline, Unix ns
	To   string     `cbor:"to,omitempty"`   // as wireMsg
	From string     `cbor:"from,omitempty"` // as wireMsg
	T    string     `cbor:"t,omitempty"`    // as wireMsg, wireReply
	M    []byte     `cbor:"m,omitempty"`    // as wireMsg, wireReply
	W    []string   `cbor:"w,omitempty"`    // as wireMsg
	C    uint64     `cbor:"c,omitempty"`    // as wireReply; welcome: refusal
	E    string     `cbor:"e,omitempty"`    // as wireReply; welcome: refusal
	X    []wireExit `cbor:"x,omitempty"`    // as wireReply
	A    []uint64   `cbor:"a,omitempty"`    // ack: IDs of queued tells
	WC   []byte     `cbor:"wc,omitempty"`   // hello: writecap for another domain
	N    uint64     `cbor:"n,omitempty"`    // welcome: requests in flight per stream
	P    uint64     `cbor:"p,omitempty"`    // welcome: tells in flight per target actor
}

// frame is a checked frame.
type frame struct {
	kind uint64
	id   uint64
	dl   time.Time  // requests: zero if none
	req  *decoded   // requests
	rep  *wireReply // replies, and a welcome's refusal (C, E)
	acks []uint64
	wc   []byte
	n, p int // welcome

	reqv decoded   // where req points: one allocation a frame
	repv wireReply // where rep points
}

// decodeFrame parses and checks a frame document: canonical CBOR of
// FrameVersion with exactly the fields its kind allows.
func decodeFrame(b []byte) (*frame, error) { return decodeFrameWith(b, paths.Parse) }

// decodeFrameWith is decodeFrame with parse for the target and sender
// paths of a request.
func decodeFrameWith(b []byte, parse func(string) (paths.Path, error)) (*frame, error) {
	if len(b) > maxFrame {
		return nil, fmt.Errorf("frame of %d bytes, over %d: %w", len(b), maxFrame, ErrBadMessage)
	}
	var w wireFrame
	if err := unmarshalFrame(b, &w); err != nil || w.V != FrameVersion {
		// Only now pay for reading the version alone, for a precise error.
		if v, verr := canon.Version(b); verr == nil && v != FrameVersion {
			return nil, fmt.Errorf("unknown frame version %d (this build reads %d): %w", v, FrameVersion, ErrBadMessage)
		}
		if err == nil {
			err = errors.New("no version")
		}
		return nil, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	return w.check(parse)
}

func (w *wireFrame) reqFields() bool {
	return w.To != "" || w.From != "" || w.T != "" || len(w.M) > 0 || len(w.W) > 0 || w.D != 0
}

func (w *wireFrame) repFields() bool {
	return w.C != 0 || w.E != "" || w.T != "" || len(w.M) > 0 || len(w.X) > 0
}

func (w *wireFrame) check(parse func(string) (paths.Path, error)) (*frame, error) {
	f := &frame{kind: w.K, id: w.I}
	bad := func(what string) (*frame, error) {
		return nil, fmt.Errorf("frame of kind %d: %s: %w", w.K, what, ErrBadMessage)
	}
	switch w.K {
	case kindSend, kindCall, kindWatch:
		switch {
		case w.I == 0:
			return bad("no request ID")
		case w.D < 0:
			return bad("negative deadline")
		case w.C != 0 || w.E != "" || len(w.X) > 0 || len(w.A) > 0 || len(w.WC) > 0 || w.N != 0 || w.P != 0:
			return bad("fields of another kind")
		}
		m := wireMsg{V: WireVersion, K: w.K, To: w.To, From: w.From, T: w.T, M: w.M, W: w.W}
		if err := m.checkInto(&f.reqv, parse); err != nil {
			return nil, err
		}
		f.req = &f.reqv
		if w.D != 0 {
			f.dl = time.Unix(0, w.D)
		}
	case kindReply:
		switch {
		case w.I == 0:
			return bad("no request ID")
		case w.C > codeOther:
			return bad(fmt.Sprintf("unknown reply code %d", w.C))
		case w.To != "" || w.From != "" || len(w.W) > 0 || w.D != 0 || len(w.A) > 0 || len(w.WC) > 0 || w.N != 0 || w.P != 0:
			return bad("fields of another kind")
		}
		f.repv = wireReply{V: WireVersion, C: w.C, E: w.E, T: w.T, M: w.M, X: w.X}
		if err := f.repv.check(); err != nil {
			return nil, err
		}
		f.rep = &f.repv
	case kindAck:
		switch {
		case len(w.A) == 0 || len(w.A) > maxAcks:
			return bad(fmt.Sprintf("needs 1 to %d IDs", maxAcks))
		case w.I != 0 || w.reqFields() || w.repFields() || len(w.WC) > 0 || w.N != 0 || w.P != 0:
			return bad("fields of another kind")
		}
		for _, id := range w.A {
			if id == 0 {
				return bad("ID 0")
			}
		}
		f.acks = w.A
	case kindHello:
		switch {
		case len(w.WC) > maxWritecap:
			return bad(fmt.Sprintf("writecap over %d bytes", maxWritecap))
		case w.I != 0 || w.reqFields() || w.repFields() || len(w.A) > 0 || w.N != 0 || w.P != 0:
			return bad("fields of another kind")
		}
		f.wc = w.WC
	case kindWelcome:
		switch {
		case w.I != 0 || w.reqFields() || w.T != "" || len(w.M) > 0 || len(w.X) > 0 || len(w.A) > 0 || len(w.WC) > 0:
			return bad("fields of another kind")
		case w.C == codeOK && (w.E != "" || w.N == 0 || w.P == 0 || w.N > maxWindow || w.P > w.N):
			return bad(fmt.Sprintf("an acceptance needs a window of 1 to %d and a per-target window of 1 to the window", maxWindow))
		case w.C != codeOK && (w.C > codeBusy || w.N != 0 || w.P != 0 || len(w.E) > maxErrText+3):
			return bad("a refusal has a known code and text only")
		}
		f.n, f.p = int(w.N), int(w.P)
		if w.C != codeOK {
			f.rep = &wireReply{V: WireVersion, C: w.C, E: w.E}
		}
	default:
		return nil, fmt.Errorf("unknown frame kind %d: %w", w.K, ErrBadMessage)
	}
	return f, nil
}

// pathCache parses paths, remembering up to maxCachedPaths of them: a
// stream's requests name the same few actors again and again. Not safe
// for concurrent use.
type pathCache map[string]paths.Path

const maxCachedPaths = 1024

func (pc pathCache) parse(s string) (paths.Path, error) {
	if p, ok := pc[s]; ok {
		return p, nil
	}
	p, err := paths.Parse(s)
	if err != nil {
		return p, err
	}
	if len(pc) >= maxCachedPaths {
		clear(pc)
	}
	pc[s] = p
	return p, nil
}

// wireFraming is the stream protocol's framing: a big-endian uint32
// length, 1 to maxFrame bytes.
var wireFraming = framing.Format{Prefix: framing.Uint32, Max: maxFrame}

// appendFrame appends w's length prefix and encoding (of version
// FrameVersion) to b; over maxFrame, it returns b as it was and an
// error.
func appendFrame(b []byte, w *wireFrame) ([]byte, error) {
	w.V = FrameVersion
	b, mark := wireFraming.Begin(b)
	b, err := wireFraming.End(appendWireFrame(b, w), mark)
	if err != nil {
		return b, fmt.Errorf("a frame: %w: %w", ErrBadMessage, err)
	}
	return b, nil
}

// readFrame reads one length-prefixed frame document from br into buf
// (grown as needed) and returns it; the length is checked before
// anything is allocated for it.
func readFrame(br *bufio.Reader, buf []byte) ([]byte, error) {
	b, err := wireFraming.Read(br, buf)
	if errors.Is(err, framing.ErrTooLarge) || errors.Is(err, framing.ErrEmpty) {
		return nil, fmt.Errorf("frame length: %w: %w", ErrBadMessage, err)
	}
	return b, err
}
