package actors

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// A hand-written encoder and strict decoder for wireMsg and wireReply,
// on the path of every remote tell and call. They write and accept
// exactly the bytes that internal/canon writes and accepts for these
// types (core deterministic CBOR, RFC 8949 §4.2.1): FuzzWireCodec checks
// them against it. So the wire format is canon's; this file is only
// faster at it (no reflection, no re-encoding to check that the input
// was canonical: the decoder takes only the shortest forms, in the one
// key order).
//
// What canon's encoding of a wireMsg or wireReply is:
//   - a map of definite length whose keys are text strings in the order
//     of their encoded bytes: shorter first, then bytewise (msgKeys,
//     replyKeys);
//   - "v" always, every other field only when it is not zero or empty
//     (omitempty);
//   - unsigned integers in their shortest head; strings as text, "m" as
//     a byte string, "w" and "x" as arrays of definite length;
//   - an exit as a map of "e" (only when not empty), "o" and "p".
//
// What canon's decoder refuses besides non-canonical input, and so does
// this one: text that is not valid UTF-8, arrays of over 4,096 items.

// msgKeys and replyKeys are wireMsg's and wireReply's keys in canonical
// order.
var (
	msgKeys   = []string{"m", "t", "v", "w", "from"}
	replyKeys = []string{"c", "e", "m", "t", "v", "x"}
	exitKeys  = []string{"e", "o", "p"}
)

// maxArray is canon's bound on the items of one array.
const maxArray = 4096

// errNotCanon: the input is not canon's encoding of the type.
var errNotCanon = errors.New("not the canonical encoding")

// CBOR major types.
const (
	majUint  = 0
	majBytes = 2
	majText  = 3
	majArray = 4
	majMap   = 5
)

// appendHead appends a data item's head in its shortest form.
func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= math.MaxUint8:
		return append(b, m|24, byte(n))
	case n <= math.MaxUint16:
		return append(b, m|25, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return append(b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, majText, uint64(len(s))), s...)
}

func appendUintField(b []byte, key string, n uint64) []byte {
	return appendHead(appendText(b, key), majUint, n)
}

func appendTextField(b []byte, key, s string) []byte {
	return appendText(appendText(b, key), s)
}

func appendBytesField(b []byte, key string, v []byte) []byte {
	return append(appendHead(appendText(b, key), majBytes, uint64(len(v))), v...)
}

func count(present ...bool) uint64 {
	n := uint64(0)
	for _, p := range present {
		if p {
			n++
		}
	}
	return n
}

// appendWireMsg appends canon's encoding of w to b.
func appendWireMsg(b []byte, w *wireMsg) []byte {
	b = appendHead(b, majMap, 1+count(len(w.M) > 0, w.T != "", len(w.W) > 0, w.From != ""))
	if len(w.M) > 0 {
		b = appendBytesField(b, "m", w.M)
	}
	if w.T != "" {
		b = appendTextField(b, "t", w.T)
	}
	b = appendUintField(b, "v", w.V)
	if len(w.W) > 0 {
		b = appendHead(appendText(b, "w"), majArray, uint64(len(w.W)))
		for _, s := range w.W {
			b = appendText(b, s)
		}
	}
	if w.From != "" {
		b = appendTextField(b, "from", w.From)
	}
	return b
}

// appendWireReply appends canon's encoding of w to b.
func appendWireReply(b []byte, w *wireReply) []byte {
	b = appendHead(b, majMap, 1+count(w.C != 0, w.E != "", len(w.M) > 0, w.T != "", len(w.X) > 0))
	if w.C != 0 {
		b = appendUintField(b, "c", w.C)
	}
	if w.E != "" {
		b = appendTextField(b, "e", w.E)
	}
	if len(w.M) > 0 {
		b = appendBytesField(b, "m", w.M)
	}
	if w.T != "" {
		b = appendTextField(b, "t", w.T)
	}
	b = appendUintField(b, "v", w.V)
	if len(w.X) > 0 {
		b = appendHead(appendText(b, "x"), majArray, uint64(len(w.X)))
		for i := range w.X {
			x := &w.X[i]
			if x.E != "" {
				b = appendTextField(appendHead(b, majMap, 3), "e", x.E)
			} else {
				b = appendHead(b, majMap, 2)
			}
			b = appendTextField(appendUintField(b, "o", x.O), "p", x.P)
		}
	}
	return b
}

// wireDec reads an encoding; the first error stops it.
type wireDec struct {
	b   []byte
	off int
	err error
}

func (d *wireDec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d", errNotCanon, what, d.off)
	}
}

// head reads a data item's head, refusing any but the shortest form,
// indefinite lengths and the reserved forms.
func (d *wireDec) head() (major byte, n uint64) {
	if d.err != nil {
		return 0, 0
	}
	if d.off >= len(d.b) {
		d.fail("unexpected end")
		return 0, 0
	}
	ib := d.b[d.off]
	major, ai := ib>>5, ib&31
	if ai < 24 {
		d.off++
		return major, uint64(ai)
	}
	var size int
	var least uint64
	switch ai {
	case 24:
		size, least = 1, 24
	case 25:
		size, least = 2, math.MaxUint8+1
	case 26:
		size, least = 4, math.MaxUint16+1
	case 27:
		size, least = 8, math.MaxUint32+1
	default:
		d.fail("indefinite length or reserved head")
		return 0, 0
	}
	if len(d.b)-d.off-1 < size {
		d.fail("unexpected end")
		return 0, 0
	}
	for _, c := range d.b[d.off+1 : d.off+1+size] {
		n = n<<8 | uint64(c)
	}
	if n < least {
		d.fail("not the shortest head")
		return 0, 0
	}
	d.off += 1 + size
	return major, n
}

// expect reads a head of the given major type.
func (d *wireDec) expect(major byte, what string) uint64 {
	m, n := d.head()
	if d.err == nil && m != major {
		d.fail(what + " expected")
		return 0
	}
	return n
}

// raw reads the n bytes of a string's content, without copying them.
func (d *wireDec) raw(major byte, what string) []byte {
	n := d.expect(major, what)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("unexpected end")
		return nil
	}
	s := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return s
}

func (d *wireDec) text() string {
	s := d.raw(majText, "text string")
	if d.err == nil && !utf8.Valid(s) {
		d.fail("invalid UTF-8")
		return ""
	}
	return string(s)
}

// bytes reads a byte string, present and so not empty.
func (d *wireDec) bytes() []byte {
	m := d.raw(majBytes, "byte string")
	d.nonEmpty(len(m) > 0)
	return append([]byte(nil), m...)
}

// nonEmpty fails unless ok: a field that is present must not be zero,
// or it would have been left out.
func (d *wireDec) nonEmpty(ok bool) {
	if !ok {
		d.fail("a zero value present")
	}
}

// array reads an array's head: 1 to maxArray items (an empty array
// would have been left out), each at least a byte.
func (d *wireDec) array() int {
	n := d.expect(majArray, "array")
	if d.err == nil && (n == 0 || n > maxArray || n > uint64(len(d.b)-d.off)) {
		d.fail(fmt.Sprintf("array of %d items", n))
		return 0
	}
	return int(n)
}

// key reads a map key and returns its index in order, which must be
// after last.
func (d *wireDec) key(order []string, last int) int {
	k := d.raw(majText, "text key")
	if d.err != nil {
		return 0
	}
	for i := last + 1; i < len(order); i++ {
		if string(k) == order[i] {
			return i
		}
	}
	d.fail(fmt.Sprintf("unknown, repeated or misplaced key %q", k))
	return 0
}

// fields reads a map of keys in order, calling field for each key's
// value, and fails unless the key at index required was among them and
// the input ends with the map.
func (d *wireDec) fields(order []string, required int, field func(key string)) error {
	n := d.expect(majMap, "map")
	last, seen := -1, false
	for range n {
		if d.err != nil {
			break
		}
		last = d.key(order, last)
		if d.err != nil {
			break
		}
		seen = seen || last == required
		field(order[last])
	}
	switch {
	case d.err != nil:
		return d.err
	case !seen:
		return fmt.Errorf("%w: no %q", errNotCanon, order[required])
	case d.off != len(d.b):
		return fmt.Errorf("%w: %d bytes after it", errNotCanon, len(d.b)-d.off)
	}
	return nil
}

// unmarshalWireMsg decodes b, which must be canon's encoding of a
// wireMsg and nothing else, into w (a zero value). Strings and byte
// strings are copied out of b.
func unmarshalWireMsg(b []byte, w *wireMsg) error {
	d := &wireDec{b: b}
	return d.fields(msgKeys, 2, func(key string) {
		switch key {
		case "m":
			w.M = d.bytes()
		case "t":
			w.T = d.text()
			d.nonEmpty(w.T != "")
		case "v":
			w.V = d.expect(majUint, "unsigned integer")
		case "w":
			w.W = make([]string, d.array())
			for i := range w.W {
				w.W[i] = d.text()
			}
		case "from":
			w.From = d.text()
			d.nonEmpty(w.From != "")
		}
	})
}

// unmarshalWireReply decodes b, which must be canon's encoding of a
// wireReply and nothing else, into w (a zero value).
func unmarshalWireReply(b []byte, w *wireReply) error {
	d := &wireDec{b: b}
	return d.fields(replyKeys, 4, func(key string) {
		switch key {
		case "c":
			w.C = d.expect(majUint, "unsigned integer")
			d.nonEmpty(w.C != 0)
		case "e":
			w.E = d.text()
			d.nonEmpty(w.E != "")
		case "m":
			w.M = d.bytes()
		case "t":
			w.T = d.text()
			d.nonEmpty(w.T != "")
		case "v":
			w.V = d.expect(majUint, "unsigned integer")
		case "x":
			w.X = make([]wireExit, d.array())
			for i := range w.X {
				d.exit(&w.X[i])
			}
		}
	})
}

func (d *wireDec) exit(x *wireExit) {
	n := d.expect(majMap, "exit map")
	last, seen := -1, 0
	for range n {
		if d.err != nil {
			return
		}
		last = d.key(exitKeys, last)
		if d.err != nil {
			return
		}
		switch exitKeys[last] {
		case "e":
			x.E = d.text()
			d.nonEmpty(x.E != "")
		case "o":
			x.O = d.expect(majUint, "unsigned integer")
			seen++
		case "p":
			x.P = d.text()
			seen++
		}
	}
	if seen != 2 {
		d.fail("an exit without its path or outcome")
	}
}
