package msg

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/internal/frame"
	"blocktree.dev/bt/paths"
)

// ProtocolID is the libp2p protocol of messages: one stream per message.
const ProtocolID protocol.ID = "/blocktree/msg/1.0.0"

// Version is the header format version this build writes and the only one
// it reads.
const Version = 1

// Header bounds. A request header holds a path (at most paths.MaxPathLen
// bytes) and at most one writecap (at most caps.MaxEncodedSize bytes); a
// response header holds an error message of at most MaxErrorMessage bytes.
const (
	MaxRequestHeader  = paths.MaxPathLen + caps.MaxEncodedSize + 256
	MaxResponseHeader = MaxErrorMessage + 64
	// MaxErrorMessage bounds the message of an error response; a handler's
	// longer error text is cut, at a rune boundary, and ends in "…".
	MaxErrorMessage = 1024
)

// kind is a response's outcome: ok, or which error.
type kind uint8

// Response kinds. New kinds may be added within a version; a sender maps
// a kind it does not know to a generic error that quotes the message.
const (
	kindOK         kind = 0 // Send: accepted; Call: the handler's reply follows
	kindNoEndpoint kind = 1 // ErrNoEndpoint
	kindTooLarge   kind = 2 // ErrTooLarge
	kindDenied     kind = 3 // ErrDenied
	kindHandler    kind = 4 // the handler's error: *RemoteError
	kindDeadline   kind = 5 // the deadline passed at the receiver
	kindBusy       kind = 6 // ErrBusy
	kindBadRequest kind = 7 // ErrBadMessage or ErrUnknownVersion
	kindClosed     kind = 8 // the receiver is shutting down
)

// request is a decoded request header.
type request struct {
	To       paths.Path
	Call     bool
	Size     int64
	Deadline time.Time // zero: none
	Writecap []byte    // encoded writecap, or nil
}

// wireRequest is a request header on the wire (docs/msg.md).
type wireRequest struct {
	V        uint   `cbor:"v"`
	To       string `cbor:"to"`
	Call     bool   `cbor:"call"`
	Size     uint64 `cbor:"size"`
	Deadline int64  `cbor:"dl"` // Unix nanoseconds; 0: none
	Writecap []byte `cbor:"wc,omitempty"`
}

// response is a decoded response header.
type response struct {
	Kind kind
	Msg  string
	Size int64
}

type wireResponse struct {
	V    uint   `cbor:"v"`
	Kind uint   `cbor:"kind"`
	Msg  string `cbor:"msg,omitempty"`
	Size uint64 `cbor:"size"`
}

// appendRequest appends a request frame's header part, uvarint(len) ||
// header, to b.
func appendRequest(b []byte, q *request) ([]byte, error) {
	w := wireRequest{V: Version, To: q.To.String(), Call: q.Call, Size: uint64(q.Size), Writecap: q.Writecap}
	if !q.Deadline.IsZero() {
		w.Deadline = q.Deadline.UnixNano()
		if w.Deadline <= 0 {
			w.Deadline = 1 // a deadline before 1970 has passed
		}
	}
	// The header's length prefix comes first: encode after room for the
	// longest prefix, then move the header back behind the real one.
	start := len(b)
	b = encodeRequestHeader(append(b, make([]byte, binary.MaxVarintLen32)...), &w)
	h := b[start+binary.MaxVarintLen32:]
	if len(h) > MaxRequestHeader {
		return b[:start], fmt.Errorf("request header of %d bytes exceeds %d (writecap too large?): %w", len(h), MaxRequestHeader, ErrTooLarge)
	}
	return shiftBehindLength(b, start, len(h)), nil
}

// shiftBehindLength rewrites b[start:], which holds MaxVarintLen32 spare
// bytes and then an n-byte header, as uvarint(n) || header.
func shiftBehindLength(b []byte, start, n int) []byte {
	var l [binary.MaxVarintLen32]byte
	ll := binary.PutUvarint(l[:], uint64(n))
	copy(b[start:], l[:ll])
	copy(b[start+ll:], b[start+binary.MaxVarintLen32:])
	return b[:start+ll+n]
}

// decodeRequest parses a request header. Errors wrap ErrBadMessage or
// ErrUnknownVersion.
func decodeRequest(data []byte) (request, error) {
	if len(data) > MaxRequestHeader {
		return request{}, fmt.Errorf("request header of %d bytes exceeds %d: %w", len(data), MaxRequestHeader, ErrBadMessage)
	}
	w, ok := parseRequestFast(data)
	if !ok {
		w = wireRequest{}
		if err := canon.Unmarshal(data, &w); err != nil {
			if v, verr := canon.Version(data); verr == nil && v != Version {
				return request{}, fmt.Errorf("request header version %d (this build reads %d): %w", v, Version, ErrUnknownVersion)
			}
			return request{}, fmt.Errorf("request header: %w: %v", ErrBadMessage, err)
		}
	}
	if w.V != Version {
		return request{}, fmt.Errorf("request header version %d (this build reads %d): %w", w.V, Version, ErrUnknownVersion)
	}
	to, err := paths.Parse(w.To)
	if err != nil {
		return request{}, fmt.Errorf("request header: target: %w: %v", ErrBadMessage, err)
	}
	if w.Size > math.MaxInt64 {
		return request{}, fmt.Errorf("request header: size %d: %w", w.Size, ErrBadMessage)
	}
	if w.Deadline < 0 {
		return request{}, fmt.Errorf("request header: negative deadline %d: %w", w.Deadline, ErrBadMessage)
	}
	if len(w.Writecap) > caps.MaxEncodedSize {
		return request{}, fmt.Errorf("request header: writecap of %d bytes: %w", len(w.Writecap), ErrBadMessage)
	}
	q := request{To: to, Call: w.Call, Size: int64(w.Size), Writecap: w.Writecap}
	if w.Deadline != 0 {
		q.Deadline = time.Unix(0, w.Deadline)
	}
	return q, nil
}

// appendResponse appends a response frame's header part to b.
func appendResponse(b []byte, r *response) ([]byte, error) {
	w := wireResponse{V: Version, Kind: uint(r.Kind), Msg: truncate(strings.ToValidUTF8(r.Msg, "\uFFFD"), MaxErrorMessage), Size: uint64(r.Size)}
	start := len(b)
	b = encodeResponseHeader(append(b, make([]byte, binary.MaxVarintLen32)...), &w)
	return shiftBehindLength(b, start, len(b)-start-binary.MaxVarintLen32), nil
}

// decodeResponse parses a response header. Errors wrap ErrBadMessage or
// ErrUnknownVersion.
func decodeResponse(data []byte) (response, error) {
	if len(data) > MaxResponseHeader {
		return response{}, fmt.Errorf("response header of %d bytes exceeds %d: %w", len(data), MaxResponseHeader, ErrBadMessage)
	}
	w, ok := parseResponseFast(data)
	if !ok {
		w = wireResponse{}
		if err := canon.Unmarshal(data, &w); err != nil {
			if v, verr := canon.Version(data); verr == nil && v != Version {
				return response{}, fmt.Errorf("response header version %d (this build reads %d): %w", v, Version, ErrUnknownVersion)
			}
			return response{}, fmt.Errorf("response header: %w: %v", ErrBadMessage, err)
		}
	}
	if w.V != Version {
		return response{}, fmt.Errorf("response header version %d (this build reads %d): %w", w.V, Version, ErrUnknownVersion)
	}
	if w.Kind > math.MaxUint8 || w.Size > math.MaxInt64 || len(w.Msg) > MaxErrorMessage+len("…") {
		return response{}, fmt.Errorf("response header: kind %d, size %d, message of %d bytes: %w", w.Kind, w.Size, len(w.Msg), ErrBadMessage)
	}
	if w.Kind != uint(kindOK) && w.Size != 0 {
		return response{}, fmt.Errorf("response header: error kind %d with a body of %d bytes: %w", w.Kind, w.Size, ErrBadMessage)
	}
	return response{Kind: kind(w.Kind), Msg: w.Msg, Size: int64(w.Size)}, nil
}

// errFrameSize is a frame length of 0 or over the bound.
var errFrameSize = errors.New("header length out of range")

// readHeader reads a frame's header, uvarint(len) || header, from br and
// returns it without copying: the slice is valid until br is read again.
// A header longer than br's buffer is copied.
func readHeader(br *bufio.Reader, limit int) ([]byte, error) {
	h, err := frame.Format{Prefix: frame.Uvarint, Max: limit}.Next(br)
	switch {
	case err == nil:
		return h, nil
	case errors.Is(err, frame.ErrTooLarge) || errors.Is(err, frame.ErrEmpty):
		return nil, fmt.Errorf("%w: %w", errFrameSize, err)
	}
	return nil, noEOF(err)
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// truncate cuts s to at most max bytes at a rune boundary, marking the cut.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// The initiator's half of multistream-select 1.0 for ProtocolID, done
// lazily, as go-multistream's NewMSSelect does it, but with no goroutine
// and no write of its own: selectPrefix goes out in the same write as the
// request, and the responder's echo is read back through the reader of
// the response.
var selectPrefix = appendToken(appendToken(nil, msmux.ProtocolID), string(ProtocolID))

// errNoProtocol: the peer answered "na" to ProtocolID.
var errNoProtocol = errors.New("protocol not supported")

// maxToken bounds a multistream token, as go-multistream does.
const maxToken = 1024

// tokenFraming is multistream's: a uvarint length, then the token and
// a newline.
var tokenFraming = frame.Format{Prefix: frame.Uvarint, Max: maxToken}

func appendToken(b []byte, tok string) []byte {
	b = tokenFraming.AppendLen(b, len(tok)+1)
	return append(append(b, tok...), '\n')
}

// readSelected reads the responder's answer to selectPrefix: both tokens
// echoed, or "na" (errNoProtocol).
func readSelected(br *bufio.Reader) error {
	for _, want := range [...]string{msmux.ProtocolID, string(ProtocolID)} {
		tok, err := tokenFraming.Next(br)
		switch {
		case errors.Is(err, frame.ErrTooLarge) || errors.Is(err, frame.ErrEmpty):
			return fmt.Errorf("multistream token: %w: %v", ErrBadMessage, err)
		case err != nil:
			return noEOF(err)
		}
		l := len(tok)
		switch {
		case tok[l-1] != '\n':
			return fmt.Errorf("multistream token without a newline: %w", ErrBadMessage)
		case string(tok[:l-1]) == "na":
			return errNoProtocol
		case string(tok[:l-1]) != want:
			return fmt.Errorf("multistream: peer selected %q, not %q: %w", tok[:l-1], want, ErrBadMessage)
		}
	}
	return nil
}
