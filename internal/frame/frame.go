package frame

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Prefix is the encoding of a frame's length.
type Prefix uint8

// The length encodings.
const (
	// Uvarint is an unsigned LEB128 varint of at most ten bytes.
	Uvarint Prefix = iota + 1
	// Uint32 is a four-byte big-endian unsigned integer.
	Uint32
)

// Sentinels for frames whose length is out of bounds.
var (
	// ErrTooLarge: a length over the Format's Max.
	ErrTooLarge = errors.New("frame over the size limit")
	// ErrEmpty: a zero length where the Format does not allow one.
	ErrEmpty = errors.New("empty frame")
)

// Format is one protocol's framing: the length prefix and the bounds of
// the body. The zero Max allows only empty bodies.
type Format struct {
	Prefix Prefix
	// Max is the largest body, in bytes.
	Max int
	// Empty allows a body of zero bytes.
	Empty bool
}

// check reports whether a body of n bytes is within f's bounds.
func (f Format) check(n uint64) error {
	switch {
	case n == 0 && !f.Empty:
		return fmt.Errorf("%w: length 0, want 1 to %d", ErrEmpty, f.Max)
	case n > uint64(max(f.Max, 0)):
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, f.Max)
	}
	return nil
}

// ReadLen reads a length prefix from br and checks it, so the caller may
// read the body itself. Errors: io.EOF before the first byte,
// io.ErrUnexpectedEOF inside the prefix, ErrTooLarge, ErrEmpty, and br's
// errors.
func (f Format) ReadLen(br *bufio.Reader) (int, error) {
	var n uint64
	switch f.Prefix {
	case Uvarint:
		var err error
		if n, err = readUvarint(br); err != nil {
			return 0, err
		}
	case Uint32:
		h, err := br.Peek(4) // not a local array, which would escape: an allocation a frame
		if err != nil {
			if len(h) > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		n = uint64(binary.BigEndian.Uint32(h))
		_, _ = br.Discard(4)
	default:
		panic(fmt.Sprintf("frame: unknown prefix %d", f.Prefix))
	}
	if err := f.check(n); err != nil {
		return 0, err
	}
	return int(n), nil
}

// Read reads one frame and returns its body, read into buf when it fits
// (buf may be nil) and into a new slice otherwise. Errors as ReadLen's,
// and io.ErrUnexpectedEOF for a short body.
func (f Format) Read(br *bufio.Reader, buf []byte) ([]byte, error) {
	n, err := f.ReadLen(br)
	if err != nil {
		return nil, err
	}
	return ReadBody(br, n, buf)
}

// ReadBody reads a body of n bytes, as Read does after the length.
func ReadBody(br *bufio.Reader, n int, buf []byte) ([]byte, error) {
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, noEOF(err)
	}
	return buf, nil
}

// Next reads one frame and returns its body without copying it: the
// slice is valid until br is read again. A body larger than br's buffer
// is copied into a new slice. Errors as Read's.
func (f Format) Next(br *bufio.Reader) ([]byte, error) {
	n, err := f.ReadLen(br)
	if err != nil {
		return nil, err
	}
	if n > br.Size() {
		return ReadBody(br, n, nil)
	}
	b, err := br.Peek(n)
	if err != nil {
		return nil, noEOF(err)
	}
	_, _ = br.Discard(n)
	return b, nil
}

// Buffered reports whether a whole frame is in br's buffer, so that
// reading it does not wait. It does not check the bounds.
func (f Format) Buffered(br *bufio.Reader) bool {
	nb := br.Buffered()
	switch f.Prefix {
	case Uint32:
		if nb < 4 {
			return false
		}
		h, _ := br.Peek(4)
		return uint64(nb) >= 4+uint64(binary.BigEndian.Uint32(h))
	case Uvarint:
		h, _ := br.Peek(min(nb, binary.MaxVarintLen64))
		n, k := binary.Uvarint(h)
		return k > 0 && uint64(nb-k) >= n
	}
	return false
}

// AppendLen appends the length prefix of a body of n bytes to b. It does
// not check the bounds: Append does.
func (f Format) AppendLen(b []byte, n int) []byte {
	if f.Prefix == Uint32 {
		return binary.BigEndian.AppendUint32(b, uint32(n))
	}
	return binary.AppendUvarint(b, uint64(n))
}

// Append appends a frame of body to b; out of bounds, it returns b
// unchanged and ErrTooLarge or ErrEmpty.
func (f Format) Append(b, body []byte) ([]byte, error) {
	if err := f.check(uint64(len(body))); err != nil {
		return b, err
	}
	return append(f.AppendLen(b, len(body)), body...), nil
}

// Write writes a frame of body to w in one Write call. Errors:
// ErrTooLarge or ErrEmpty (nothing written), and w's errors.
func (f Format) Write(w io.Writer, body []byte) error {
	b, err := f.Append(make([]byte, 0, f.prefixLen(len(body))+len(body)), body)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Begin starts a frame whose body the caller appends to the result; End
// finishes it. It needs a fixed-size prefix (Uint32) and panics otherwise.
// The returned mark is End's second argument.
func (f Format) Begin(b []byte) ([]byte, int) {
	if f.Prefix != Uint32 {
		panic("frame: Begin needs a fixed-size prefix")
	}
	return append(b, 0, 0, 0, 0), len(b)
}

// End fills in the length of the frame begun at mark. Out of bounds it
// returns b as it was before Begin and ErrTooLarge or ErrEmpty.
func (f Format) End(b []byte, mark int) ([]byte, error) {
	n := len(b) - mark - 4
	if err := f.check(uint64(n)); err != nil {
		return b[:mark], err
	}
	binary.BigEndian.PutUint32(b[mark:], uint32(n))
	return b, nil
}

func (f Format) prefixLen(n int) int {
	if f.Prefix == Uint32 {
		return 4
	}
	l := 1
	for v := uint64(n); v >= 0x80; v >>= 7 {
		l++
	}
	return l
}

// readUvarint is binary.ReadUvarint on a *bufio.Reader, with overflow
// reported as ErrTooLarge (encoding/binary's error is unexported).
func readUvarint(br *bufio.Reader) (uint64, error) {
	var x uint64
	var s uint
	for i := range binary.MaxVarintLen64 {
		c, err := br.ReadByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				break
			}
			return x | uint64(c)<<s, nil
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	return 0, fmt.Errorf("%w: the length overflows 64 bits", ErrTooLarge)
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
