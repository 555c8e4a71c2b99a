package msg

import (
	"math"
	"unicode/utf8"
)

// A fast codec for the two headers. Every message crosses four header
// codings, and canon's reflective encoder, and its decoder that re-encodes
// to prove canonicity, cost more than everything else msg does per
// message. The headers have one fixed shape, so their canonical encoding
// is written directly here:
//
//	request  = map(5|6) "v" uint, "dl" uint, "to" tstr, ["wc" bstr], "call" bool, "size" uint
//	response = map(3|4) "v" uint, ["msg" tstr], "kind" uint, "size" uint
//
// (core deterministic order: shorter keys first, then bytewise). canon
// stays the reference: the encoders' output is compared with
// canon.Marshal's in tests, the parsers accept only what canon accepts,
// with the same values (FuzzParseFast checks both), and whatever a parser
// does not accept is handed to canon, whose verdict and error stand.

// CBOR major types, shifted into the initial byte.
const (
	cborUint  = 0 << 5
	cborBytes = 2 << 5
	cborText  = 3 << 5
	cborMap   = 5 << 5
	cborFalse = 0xf4
	cborTrue  = 0xf5
)

// Encoded map keys: a text-string header and the key.
const (
	keyV    = "\x61v"
	keyDL   = "\x62dl"
	keyTo   = "\x62to"
	keyWC   = "\x62wc"
	keyCall = "\x64call"
	keySize = "\x64size"
	keyMsg  = "\x63msg"
	keyKind = "\x64kind"
)

// appendHead appends a CBOR head of major type major (shifted) and
// argument v in its shortest form.
func appendHead(b []byte, major byte, v uint64) []byte {
	switch {
	case v < 24:
		return append(b, major|byte(v))
	case v <= math.MaxUint8:
		return append(b, major|24, byte(v))
	case v <= math.MaxUint16:
		return append(b, major|25, byte(v>>8), byte(v))
	case v <= math.MaxUint32:
		return append(b, major|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, major|27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// encodeRequestHeader appends w's canonical encoding to b. w.Deadline must
// not be negative.
func encodeRequestHeader(b []byte, w *wireRequest) []byte {
	n := uint64(5)
	if len(w.Writecap) > 0 {
		n = 6
	}
	b = appendHead(b, cborMap, n)
	b = appendHead(append(b, keyV...), cborUint, uint64(w.V))
	b = appendHead(append(b, keyDL...), cborUint, uint64(w.Deadline))
	b = append(appendHead(append(b, keyTo...), cborText, uint64(len(w.To))), w.To...)
	if len(w.Writecap) > 0 {
		b = append(appendHead(append(b, keyWC...), cborBytes, uint64(len(w.Writecap))), w.Writecap...)
	}
	b = append(b, keyCall...)
	if w.Call {
		b = append(b, cborTrue)
	} else {
		b = append(b, cborFalse)
	}
	return appendHead(append(b, keySize...), cborUint, w.Size)
}

// encodeResponseHeader appends w's canonical encoding to b.
func encodeResponseHeader(b []byte, w *wireResponse) []byte {
	n := uint64(3)
	if w.Msg != "" {
		n = 4
	}
	b = appendHead(b, cborMap, n)
	b = appendHead(append(b, keyV...), cborUint, uint64(w.V))
	if w.Msg != "" {
		b = append(appendHead(append(b, keyMsg...), cborText, uint64(len(w.Msg))), w.Msg...)
	}
	b = appendHead(append(b, keyKind...), cborUint, uint64(w.Kind))
	return appendHead(append(b, keySize...), cborUint, w.Size)
}

// parser reads canonical CBOR of the headers' shapes. Every method
// reports false for anything else, after which the parser is not used.
type parser struct {
	b   []byte
	off int
}

// head reads a head of major type major (shifted) in its shortest form.
func (p *parser) head(major byte) (uint64, bool) {
	if p.off >= len(p.b) || p.b[p.off]&0xe0 != major {
		return 0, false
	}
	ai := p.b[p.off] & 0x1f
	p.off++
	var n int
	switch {
	case ai < 24:
		return uint64(ai), true
	case ai == 24:
		n = 1
	case ai == 25:
		n = 2
	case ai == 26:
		n = 4
	case ai == 27:
		n = 8
	default:
		return 0, false
	}
	if len(p.b)-p.off < n {
		return 0, false
	}
	var v uint64
	for _, c := range p.b[p.off : p.off+n] {
		v = v<<8 | uint64(c)
	}
	p.off += n
	// Shortest form only: each width holds what the narrower one cannot.
	min := [...]uint64{1: 24, 2: math.MaxUint8 + 1, 4: math.MaxUint16 + 1, 8: math.MaxUint32 + 1}[n]
	return v, v >= min
}

// key reads the encoded key k.
func (p *parser) key(k string) bool {
	if len(p.b)-p.off < len(k) || string(p.b[p.off:p.off+len(k)]) != k {
		return false
	}
	p.off += len(k)
	return true
}

// str reads a byte or text string's content, at most max bytes; text must
// be valid UTF-8.
func (p *parser) str(major byte, max int) ([]byte, bool) {
	n, ok := p.head(major)
	if !ok || n > uint64(max) || n > uint64(len(p.b)-p.off) {
		return nil, false
	}
	s := p.b[p.off : p.off+int(n)]
	p.off += int(n)
	return s, major != cborText || utf8.Valid(s)
}

func (p *parser) boolean() (bool, bool) {
	if p.off >= len(p.b) {
		return false, false
	}
	c := p.b[p.off]
	p.off++
	return c == cborTrue, c == cborTrue || c == cborFalse
}

func (p *parser) end() bool { return p.off == len(p.b) }

// parseRequestFast parses the canonical encoding of a request header: true
// only for input that canon.Unmarshal accepts too, with the same result.
func parseRequestFast(data []byte) (w wireRequest, ok bool) {
	p := parser{b: data}
	n, ok := p.head(cborMap)
	if !ok || (n != 5 && n != 6) || !p.key(keyV) {
		return w, false
	}
	v, ok := p.head(cborUint)
	if !ok || v > math.MaxUint32 || !p.key(keyDL) {
		return w, false
	}
	w.V = uint(v)
	dl, ok := p.head(cborUint)
	if !ok || dl > math.MaxInt64 || !p.key(keyTo) {
		return w, false
	}
	w.Deadline = int64(dl)
	to, ok := p.str(cborText, MaxRequestHeader)
	if !ok {
		return w, false
	}
	w.To = string(to)
	if n == 6 {
		if !p.key(keyWC) {
			return w, false
		}
		wc, ok := p.str(cborBytes, MaxRequestHeader)
		if !ok || len(wc) == 0 { // empty is omitted, so not canonical
			return w, false
		}
		w.Writecap = append([]byte(nil), wc...)
	}
	if !p.key(keyCall) {
		return w, false
	}
	if w.Call, ok = p.boolean(); !ok || !p.key(keySize) {
		return w, false
	}
	if w.Size, ok = p.head(cborUint); !ok || !p.end() {
		return w, false
	}
	return w, true
}

// parseResponseFast parses the canonical encoding of a response header:
// true only for input that canon.Unmarshal accepts too, with the same
// result.
func parseResponseFast(data []byte) (w wireResponse, ok bool) {
	p := parser{b: data}
	n, ok := p.head(cborMap)
	if !ok || (n != 3 && n != 4) || !p.key(keyV) {
		return w, false
	}
	v, ok := p.head(cborUint)
	if !ok || v > math.MaxUint32 {
		return w, false
	}
	w.V = uint(v)
	if n == 4 {
		if !p.key(keyMsg) {
			return w, false
		}
		msg, ok := p.str(cborText, MaxResponseHeader)
		if !ok || len(msg) == 0 {
			return w, false
		}
		w.Msg = string(msg)
	}
	if !p.key(keyKind) {
		return w, false
	}
	k, ok := p.head(cborUint)
	if !ok || k > math.MaxUint32 || !p.key(keySize) {
		return w, false
	}
	w.Kind = uint(k)
	if w.Size, ok = p.head(cborUint); !ok || !p.end() {
		return w, false
	}
	return w, true
}
