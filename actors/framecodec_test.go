package actors

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/canon"
)

// TestFrameCodecFrozen: the hand-written codec reads the frozen frames
// as canon does and writes them as the same bytes.
func TestFrameCodecFrozen(t *testing.T) {
	for name := range frozenFrames {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			w := checkFrameCodec(t, b)
			if w == nil {
				t.Fatalf("%s refused", name)
			}
			if got := appendWireFrame(nil, w); !bytes.Equal(got, b) {
				t.Fatalf("re-encoded as %x, frozen %x", got, b)
			}
		})
	}
}

// frameCodecEdges are inputs at the edges of the canonical form, each
// named by what it tries.
var frameCodecEdges = map[string][]byte{
	"empty":             nil,
	"empty map":         {0xa0},
	"only v":            {0xa1, 0x61, 'v', 0x01},
	"v k":               {0xa2, 0x61, 'k', 0x00, 0x61, 'v', 0x01},
	"k v reversed":      {0xa2, 0x61, 'v', 0x01, 0x61, 'k', 0x00},
	"v k twice":         {0xa3, 0x61, 'k', 0x00, 0x61, 'k', 0x00, 0x61, 'v', 0x01},
	"long head":         {0xa2, 0x61, 'k', 0x18, 0x05, 0x61, 'v', 0x01},
	"k 24":              {0xa2, 0x61, 'k', 0x18, 0x18, 0x61, 'v', 0x01},
	"trailing":          {0xa2, 0x61, 'k', 0x00, 0x61, 'v', 0x01, 0x00},
	"indefinite map":    {0xbf, 0x61, 'k', 0x00, 0x61, 'v', 0x01, 0xff},
	"i zero":            {0xa3, 0x61, 'i', 0x00, 0x61, 'k', 0x00, 0x61, 'v', 0x01},
	"m empty":           {0xa3, 0x61, 'k', 0x00, 0x61, 'm', 0x40, 0x61, 'v', 0x01},
	"e invalid utf-8":   {0xa3, 0x61, 'e', 0x61, 0xff, 0x61, 'k', 0x00, 0x61, 'v', 0x01},
	"d negative":        {0xa3, 0x61, 'd', 0x20, 0x61, 'k', 0x00, 0x61, 'v', 0x01},
	"d overflow":        {0xa3, 0x61, 'd', 0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x61, 'k', 0x00, 0x61, 'v', 0x01},
	"d min":             {0xa3, 0x61, 'd', 0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x61, 'k', 0x00, 0x61, 'v', 0x01},
	"V upper case":      {0xa2, 0x61, 'V', 0x01, 0x61, 'k', 0x00},
	"tagged k":          {0xa2, 0x61, 'k', 0xc1, 0x00, 0x61, 'v', 0x01},
	"w empty string":    {0xa3, 0x61, 'k', 0x02, 0x61, 'v', 0x01, 0x61, 'w', 0x81, 0x60},
	"w empty array":     {0xa3, 0x61, 'k', 0x02, 0x61, 'v', 0x01, 0x61, 'w', 0x80},
	"x exit":            {0xa3, 0x61, 'k', 0x03, 0x61, 'v', 0x01, 0x61, 'x', 0x81, 0xa2, 0x61, 'o', 0x01, 0x61, 'p', 0x60},
	"x exit empty e":    {0xa3, 0x61, 'k', 0x03, 0x61, 'v', 0x01, 0x61, 'x', 0x81, 0xa3, 0x61, 'e', 0x60, 0x61, 'o', 0x01, 0x61, 'p', 0x60},
	"x exit without p":  {0xa3, 0x61, 'k', 0x03, 0x61, 'v', 0x01, 0x61, 'x', 0x81, 0xa1, 0x61, 'o', 0x01},
	"a with 0":          {0xa3, 0x61, 'a', 0x81, 0x00, 0x61, 'k', 0x04, 0x61, 'v', 0x01},
	"a huge count":      {0xa3, 0x61, 'a', 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x61, 'k', 0x04, 0x61, 'v', 0x01},
	"wc":                {0xa3, 0x61, 'k', 0x05, 0x61, 'v', 0x01, 0x62, 'w', 'c', 0x41, 0x00},
	"from before to":    {0xa4, 0x61, 'k', 0x01, 0x61, 'v', 0x01, 0x64, 'f', 'r', 'o', 'm', 0x61, 'x', 0x62, 't', 'o', 0x61, 'y'},
	"text key as bytes": {0xa2, 0x41, 'k', 0x00, 0x61, 'v', 0x01},
	"float v":           {0xa2, 0x61, 'k', 0x00, 0x61, 'v', 0xf9, 0x3c, 0x00},
}

// checkFrameCodec decodes b with both decoders and fails the test unless
// they agree: both refuse it, or both accept it as the same frame, which
// both encoders write as b again. It returns the frame, or nil.
func checkFrameCodec(t *testing.T, b []byte) *wireFrame {
	t.Helper()
	if len(b) > canon.MaxSize {
		return nil
	}
	var want, got wireFrame
	werr := canon.Unmarshal(b, &want)
	gerr := unmarshalFrame(b, &got)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%x: canon says %v, the hand-written decoder %v", b, werr, gerr)
	}
	if werr != nil {
		return nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%x: decoded as %+v, canon %+v", b, got, want)
	}
	if enc := appendWireFrame(nil, &got); !bytes.Equal(enc, b) {
		t.Fatalf("%x: re-encoded as %x", b, enc)
	}
	return &got
}

// checkFrameEncode encodes w with both encoders and fails the test
// unless the bytes are the same; then both decoders must agree on them.
func checkFrameEncode(t *testing.T, w *wireFrame) {
	t.Helper()
	want, err := canon.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	if got := appendWireFrame(nil, w); !bytes.Equal(got, want) {
		t.Fatalf("%+v: encoded as %x, canon %x", w, got, want)
	}
	checkFrameCodec(t, want)
}

func TestFrameCodecEdges(t *testing.T) {
	for name, b := range frameCodecEdges {
		t.Run(name, func(t *testing.T) { checkFrameCodec(t, b) })
	}
}

func TestFrameCodecEncode(t *testing.T) {
	for name, w := range map[string]wireFrame{
		"zero":        {},
		"all":         {V: 1, K: 9, I: 1 << 40, D: -1 << 63, To: "t", From: "f", T: "x", M: []byte{0}, W: []string{"", "é"}, C: 300, E: "e", X: []wireExit{{}, {P: "p", O: 70000, E: "e"}}, A: []uint64{0, 23, 24, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<64 - 1}, WC: make([]byte, 300), N: 24, P: 255},
		"max d":       {V: 1, D: 1<<63 - 1},
		"bad utf-8":   {V: 1, E: "\xff", W: []string{"\xc3"}},
		"empty slice": {V: 1, M: []byte{}, W: []string{}, X: []wireExit{}, A: []uint64{}},
	} {
		t.Run(name, func(t *testing.T) { checkFrameEncode(t, &w) })
	}
	for name, w := range frozenFrames {
		t.Run(name, func(t *testing.T) { checkFrameEncode(t, &w) })
	}
}

// frameGen makes a frame out of fuzz input, every field optional and
// every length and integer width reachable.
type frameGen struct{ b []byte }

func (g *frameGen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *frameGen) uint() uint64 {
	var n uint64
	for range g.byte() % 9 {
		n = n<<8 | uint64(g.byte())
	}
	return n
}

func (g *frameGen) bytes() []byte {
	n := int(g.byte() % 32)
	if n == 31 {
		n = 300
	}
	n = min(n, len(g.b))
	s := g.b[:n]
	g.b = g.b[n:]
	return s
}

func (g *frameGen) frame() *wireFrame {
	mask := uint32(g.byte()) | uint32(g.byte())<<8 | uint32(g.byte())<<16
	on := func(bit int) bool { return mask&(1<<bit) != 0 }
	w := &wireFrame{V: uint64(g.byte() % 3), K: uint64(g.byte() % 8)}
	if on(0) {
		w.I = g.uint()
	}
	if on(1) {
		w.D = int64(g.uint())
	}
	if on(2) {
		w.To = string(g.bytes())
	}
	if on(3) {
		w.From = string(g.bytes())
	}
	if on(4) {
		w.T = string(g.bytes())
	}
	if on(5) {
		w.M = g.bytes()
	}
	if on(6) {
		for range g.byte() % 4 {
			w.W = append(w.W, string(g.bytes()))
		}
	}
	if on(7) {
		w.C = g.uint()
	}
	if on(8) {
		w.E = string(g.bytes())
	}
	if on(9) {
		for range g.byte() % 4 {
			x := wireExit{P: string(g.bytes()), O: g.uint()}
			if on(16) {
				x.E = string(g.bytes())
			}
			w.X = append(w.X, x)
		}
	}
	if on(10) {
		for range g.byte() % 5 {
			w.A = append(w.A, g.uint())
		}
	}
	if on(11) {
		w.WC = g.bytes()
	}
	if on(12) {
		w.N = g.uint()
	}
	if on(13) {
		w.P = g.uint()
	}
	return w
}

// FuzzFrameCodec: the hand-written frame codec against internal/canon.
// The input is decoded by both (same accept/refuse decision, same frame,
// same bytes again), and read as the fields of a frame that both
// encode (same bytes, which both decoders then judge alike).
func FuzzFrameCodec(f *testing.F) {
	for _, w := range frozenFrames {
		f.Add(encode(w))
	}
	for _, b := range frameCodecEdges {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFrameCodec(t, b)
		checkFrameEncode(t, (&frameGen{b}).frame())
	})
}

// TestWriteFrameCodecCorpus writes the seed corpus of FuzzFrameCodec
// with BT_WRITE_FROZEN set.
func TestWriteFrameCodecCorpus(t *testing.T) {
	if os.Getenv("BT_WRITE_FROZEN") == "" {
		t.Skip("BT_WRITE_FROZEN not set")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzFrameCodec")
	os.MkdirAll(dir, 0o755)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, w := range frozenFrames {
		write("seed-"+name[:len(name)-len(".cbor")], encode(w))
	}
	for name, b := range frameCodecEdges {
		write("edge-"+filepathSafe(name), b)
	}
}

func filepathSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			b[i] = '-'
		}
	}
	return string(b)
}

// BenchmarkFrameCodec: a call frame's round trip (encode, decode)
// through the hand-written codec against internal/canon.
func BenchmarkFrameCodec(b *testing.B) {
	w := frozenFrames["frame-call-v1.cbor"]
	var buf []byte
	ours := func() error {
		buf = appendWireFrame(buf[:0], &w)
		var got wireFrame
		return unmarshalFrame(buf, &got)
	}
	anchor := func() error {
		enc, err := canon.Marshal(&w)
		if err != nil {
			return err
		}
		var got wireFrame
		return canon.Unmarshal(enc, &got)
	}
	benchcmp.Compare(b, "frame-codec-call-roundtrip-vs-canon", benchcmp.Options{Rounds: 5, Ops: 2000}, ours, anchor)
}

// TestCutValidUTF8: an error text cut to fit, or not valid UTF-8 to
// begin with, still makes a frame the receiver takes.
func TestCutValidUTF8(t *testing.T) {
	for name, s := range map[string]string{
		"cut in a rune": strings.Repeat("a", maxErrText-1) + "é and more",
		"invalid":       "bad \xff byte",
	} {
		t.Run(name, func(t *testing.T) {
			b, err := appendFrame(nil, errFrame(1, errors.New(s)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeFrame(b[4:]); err != nil {
				t.Fatal(err)
			}
		})
	}
}
