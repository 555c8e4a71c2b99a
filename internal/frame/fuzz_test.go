package frame

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// FuzzRead reads frames of every prefix from arbitrary input: it never
// panics, never returns a body out of bounds, agrees between Read and
// Next, reports only the documented errors, and a frame it reads writes
// back (in the minimal encoding) as the bytes it consumed.
func FuzzRead(f *testing.F) {
	f.Add([]byte{3, 'a', 'b', 'c'}, uint16(16), false)
	f.Add([]byte{0, 0, 0, 3, 'a', 'b', 'c'}, uint16(16), false)
	f.Add([]byte{0}, uint16(0), true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, uint16(100), false)
	f.Add([]byte{0x80, 0x01}, uint16(200), false)
	f.Fuzz(func(t *testing.T, data []byte, limit uint16, empty bool) {
		for _, p := range []Prefix{Uvarint, Uint32} {
			fm := Format{Prefix: p, Max: int(limit), Empty: empty}
			r1 := bufio.NewReaderSize(bytes.NewReader(data), 16)
			r2 := bufio.NewReaderSize(bytes.NewReader(data), 16)
			for {
				a, err1 := fm.Read(r1, nil)
				b, err2 := fm.Next(r2)
				if (err1 == nil) != (err2 == nil) || !bytes.Equal(a, b) {
					t.Fatalf("Read %q %v, Next %q %v", a, err1, b, err2)
				}
				if err1 != nil {
					if !errors.Is(err1, io.EOF) && !errors.Is(err1, io.ErrUnexpectedEOF) &&
						!errors.Is(err1, ErrTooLarge) && !errors.Is(err1, ErrEmpty) {
						t.Fatalf("undocumented error %v", err1)
					}
					break
				}
				if len(a) > fm.Max || (len(a) == 0 && !empty) {
					t.Fatalf("a body of %d bytes with %+v", len(a), fm)
				}
				w, err := fm.Append(nil, a)
				if err != nil {
					t.Fatalf("Append of a body Read returned: %v", err)
				}
				if p == Uint32 || bytes.Equal(w[:len(w)-len(a)], binary.AppendUvarint(nil, uint64(len(a)))) {
					continue
				}
				t.Fatalf("prefix % x", w)
			}
		}
	})
}
