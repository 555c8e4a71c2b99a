package frame

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
)

var (
	uv    = Format{Prefix: Uvarint, Max: 300}
	u32   = Format{Prefix: Uint32, Max: 300}
	uvAck = Format{Prefix: Uvarint, Max: 0, Empty: true}
)

func reader(b []byte) *bufio.Reader { return bufio.NewReaderSize(bytes.NewReader(b), 16) }

func TestRead(t *testing.T) {
	body := bytes.Repeat([]byte{7}, 200)
	tests := []struct {
		name string
		f    Format
		in   []byte
		want []byte
		err  error
	}{
		{"uvarint", uv, append([]byte{3}, "abc"...), []byte("abc"), nil},
		{"uvarint two-byte length", uv, append([]byte{0xc8, 0x01}, body...), body, nil},
		{"uvarint non-minimal", uv, append([]byte{0x83, 0x00}, "abc"...), []byte("abc"), nil},
		{"uvarint empty input", uv, nil, nil, io.EOF},
		{"uvarint cut prefix", uv, []byte{0x80}, nil, io.ErrUnexpectedEOF},
		{"uvarint cut body", uv, []byte{3, 'a'}, nil, io.ErrUnexpectedEOF},
		{"uvarint no body", uv, []byte{3}, nil, io.ErrUnexpectedEOF},
		{"uvarint zero", uv, []byte{0}, nil, ErrEmpty},
		{"uvarint zero allowed", uvAck, []byte{0}, []byte{}, nil},
		{"uvarint over ack", uvAck, []byte{1, 1}, nil, ErrTooLarge},
		{"uvarint over max", uv, []byte{0xad, 0x02}, nil, ErrTooLarge},
		{"uvarint overflow 10th byte", uv, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, nil, ErrTooLarge},
		{"uvarint 11 bytes", uv, bytes.Repeat([]byte{0x80}, 11), nil, ErrTooLarge},
		{"uint32", u32, append([]byte{0, 0, 0, 3}, "abc"...), []byte("abc"), nil},
		{"uint32 long", u32, append([]byte{0, 0, 0, 200}, body...), body, nil},
		{"uint32 empty input", u32, nil, nil, io.EOF},
		{"uint32 cut prefix", u32, []byte{0, 0}, nil, io.ErrUnexpectedEOF},
		{"uint32 cut body", u32, []byte{0, 0, 0, 3, 'a'}, nil, io.ErrUnexpectedEOF},
		{"uint32 zero", u32, []byte{0, 0, 0, 0}, nil, ErrEmpty},
		{"uint32 over max", u32, []byte{0, 0, 1, 45}, nil, ErrTooLarge},
		{"uint32 huge", u32, []byte{0xff, 0xff, 0xff, 0xff}, nil, ErrTooLarge},
	}
	for _, tt := range tests {
		for _, how := range []string{"Read", "Read into buf", "Next"} {
			t.Run(tt.name+"/"+how, func(t *testing.T) {
				var got []byte
				var err error
				switch how {
				case "Read":
					got, err = tt.f.Read(reader(tt.in), nil)
				case "Read into buf":
					got, err = tt.f.Read(reader(tt.in), make([]byte, 0, 8))
				case "Next":
					got, err = tt.f.Next(reader(tt.in))
				}
				if !errors.Is(err, tt.err) {
					t.Fatalf("err %v, want %v", err, tt.err)
				}
				if !bytes.Equal(got, tt.want) {
					t.Fatalf("body %q, want %q", got, tt.want)
				}
			})
		}
	}
}

func TestReadIntoBuf(t *testing.T) {
	buf := make([]byte, 0, 8)
	got, err := uv.Read(reader([]byte{3, 'a', 'b', 'c'}), buf)
	if err != nil || &got[0] != &buf[:1][0] {
		t.Fatalf("Read did not use the buffer that fits: %v", err)
	}
}

func TestAppendRoundTrip(t *testing.T) {
	for _, f := range []Format{uv, u32, {Prefix: Uvarint, Max: 1 << 20}, {Prefix: Uint32, Max: 1 << 20}} {
		for _, n := range []int{1, 127, 128, 300, 16383, 16384, 1 << 20} {
			if n > f.Max {
				continue
			}
			t.Run(fmt.Sprintf("%d/%d", f.Prefix, n), func(t *testing.T) {
				body := bytes.Repeat([]byte{byte(n)}, n)
				b, err := f.Append([]byte("x"), body)
				if err != nil {
					t.Fatal(err)
				}
				if len(b) != 1+f.prefixLen(n)+n {
					t.Fatalf("frame of %d bytes, want %d", len(b), 1+f.prefixLen(n)+n)
				}
				var w bytes.Buffer
				if err := f.Write(&w, body); err != nil || !bytes.Equal(w.Bytes(), b[1:]) {
					t.Fatalf("Write wrote %d bytes (%v), Append %d", w.Len(), err, len(b)-1)
				}
				if f.Prefix == Uvarint && !bytes.Equal(b[1:1+f.prefixLen(n)], binary.AppendUvarint(nil, uint64(n))) {
					t.Fatal("the prefix is not encoding/binary's")
				}
				br := bufio.NewReaderSize(bytes.NewReader(b[1:]), 1<<21)
				if !f.Buffered(br) {
					_, _ = br.Peek(1)
				}
				if !f.Buffered(br) {
					t.Fatal("a whole frame in the buffer is not Buffered")
				}
				got, err := f.Read(br, nil)
				if err != nil || !bytes.Equal(got, body) {
					t.Fatalf("read back %d bytes, %v", len(got), err)
				}
				if _, err := f.Read(br, nil); err != io.EOF {
					t.Fatalf("after the frame: %v, want io.EOF", err)
				}
			})
		}
	}
}

func TestAppendBounds(t *testing.T) {
	if b, err := uv.Append([]byte("x"), nil); !errors.Is(err, ErrEmpty) || string(b) != "x" {
		t.Fatalf("empty: %q %v", b, err)
	}
	if b, err := u32.Append([]byte("x"), make([]byte, 301)); !errors.Is(err, ErrTooLarge) || string(b) != "x" {
		t.Fatalf("over: %q %v", b, err)
	}
	var w bytes.Buffer
	if err := uv.Write(&w, make([]byte, 301)); !errors.Is(err, ErrTooLarge) || w.Len() != 0 {
		t.Fatalf("Write over the limit: %v, wrote %d", err, w.Len())
	}
}

func TestBeginEnd(t *testing.T) {
	b, mark := u32.Begin([]byte("x"))
	b = append(b, "abc"...)
	b, err := u32.End(b, mark)
	if err != nil || !bytes.Equal(b, []byte{'x', 0, 0, 0, 3, 'a', 'b', 'c'}) {
		t.Fatalf("%q %v", b, err)
	}
	b, mark = u32.Begin(b)
	b = append(b, make([]byte, 301)...)
	if b, err = u32.End(b, mark); !errors.Is(err, ErrTooLarge) || len(b) != 8 {
		t.Fatalf("over the limit: %d bytes, %v", len(b), err)
	}
}

func TestBuffered(t *testing.T) {
	tests := []struct {
		name string
		f    Format
		in   []byte
		want bool
	}{
		{"uvarint whole", uv, []byte{2, 'a', 'b'}, true},
		{"uvarint short", uv, []byte{2, 'a'}, false},
		{"uvarint cut prefix", uv, []byte{0x80}, false},
		{"uvarint nothing", uv, nil, false},
		{"uint32 whole", u32, []byte{0, 0, 0, 1, 'a'}, true},
		{"uint32 short", u32, []byte{0, 0, 0, 2, 'a'}, false},
		{"uint32 cut prefix", u32, []byte{0, 0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := reader(tt.in)
			_, _ = br.Peek(1)
			if got := tt.f.Buffered(br); got != tt.want {
				t.Fatalf("Buffered %v, want %v", got, tt.want)
			}
		})
	}
}

// TestReadUvarintLikeBinary: the length reader accepts exactly what
// encoding/binary's does, with the same value.
func TestReadUvarintLikeBinary(t *testing.T) {
	ins := [][]byte{{0}, {1}, {0x7f}, {0x80, 0x01}, {0xff, 0x7f}, {0x80, 0x80, 0x00},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},
		bytes.Repeat([]byte{0x80}, 12)}
	for _, in := range ins {
		got, err := readUvarint(reader(in))
		want, werr := binary.ReadUvarint(bytes.NewReader(in))
		if (err == nil) != (werr == nil) || (err == nil && got != want) {
			t.Errorf("% x: %d %v, encoding/binary %d %v", in, got, err, want, werr)
		}
	}
}

func ExampleFormat() {
	f := Format{Prefix: Uvarint, Max: 1024}
	var w bytes.Buffer
	_ = f.Write(&w, []byte("hello"))
	_ = f.Write(&w, []byte("world"))
	br := bufio.NewReader(&w)
	for {
		b, err := f.Read(br, nil)
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Printf("%s\n", b)
	}
	// Output:
	// hello
	// world
	// EOF
}
