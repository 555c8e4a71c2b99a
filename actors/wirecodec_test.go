package actors

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/canon"
)

// wireCodecEdges are inputs at the edges of the canonical form, each
// named by what it tries.
var wireCodecEdges = map[string][]byte{
	"empty":             nil,
	"empty map":         {0xa0},
	"only v":            {0xa1, 0x61, 'v', 0x02},
	"v zero":            {0xa1, 0x61, 'v', 0x00},
	"t v":               {0xa2, 0x61, 't', 0x61, 'x', 0x61, 'v', 0x02},
	"v t reversed":      {0xa2, 0x61, 'v', 0x02, 0x61, 't', 0x61, 'x'},
	"v twice":           {0xa2, 0x61, 'v', 0x02, 0x61, 'v', 0x02},
	"long head":         {0xa1, 0x61, 'v', 0x18, 0x02},
	"v 24":              {0xa1, 0x61, 'v', 0x18, 0x18},
	"trailing":          {0xa1, 0x61, 'v', 0x02, 0x00},
	"indefinite map":    {0xbf, 0x61, 'v', 0x02, 0xff},
	"m empty":           {0xa2, 0x61, 'm', 0x40, 0x61, 'v', 0x02},
	"t empty":           {0xa2, 0x61, 't', 0x60, 0x61, 'v', 0x02},
	"c zero":            {0xa2, 0x61, 'c', 0x00, 0x61, 'v', 0x02},
	"e invalid utf-8":   {0xa2, 0x61, 'e', 0x61, 0xff, 0x61, 'v', 0x02},
	"v negative":        {0xa1, 0x61, 'v', 0x21},
	"V upper case":      {0xa1, 0x61, 'V', 0x02},
	"tagged v":          {0xa1, 0x61, 'v', 0xc1, 0x02},
	"w empty string":    {0xa2, 0x61, 'v', 0x02, 0x61, 'w', 0x81, 0x60},
	"w empty array":     {0xa2, 0x61, 'v', 0x02, 0x61, 'w', 0x80},
	"w huge count":      {0xa2, 0x61, 'v', 0x02, 0x61, 'w', 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	"x exit":            {0xa2, 0x61, 'v', 0x02, 0x61, 'x', 0x81, 0xa2, 0x61, 'o', 0x01, 0x61, 'p', 0x60},
	"x exit empty e":    {0xa2, 0x61, 'v', 0x02, 0x61, 'x', 0x81, 0xa3, 0x61, 'e', 0x60, 0x61, 'o', 0x01, 0x61, 'p', 0x60},
	"x exit without p":  {0xa2, 0x61, 'v', 0x02, 0x61, 'x', 0x81, 0xa1, 0x61, 'o', 0x01},
	"from":              {0xa2, 0x61, 'v', 0x02, 0x64, 'f', 'r', 'o', 'm', 0x61, 'a'},
	"from before v":     {0xa2, 0x64, 'f', 'r', 'o', 'm', 0x61, 'a', 0x61, 'v', 0x02},
	"v1 with k and to":  {0xa3, 0x61, 'k', 0x00, 0x61, 'v', 0x01, 0x62, 't', 'o', 0x61, 'x'},
	"text key as bytes": {0xa1, 0x41, 'v', 0x02},
	"float v":           {0xa1, 0x61, 'v', 0xf9, 0x3c, 0x00},
}

// checkWireCodec decodes b as a request and as a reply with both
// decoders and fails the test unless they agree: both refuse it, or
// both accept it as the same value, which both encoders write as b
// again.
func checkWireCodec(t *testing.T, b []byte) {
	t.Helper()
	if len(b) > canon.MaxSize {
		return
	}
	var wm, gm wireMsg
	checkAgree(t, b, canon.Unmarshal(b, &wm), unmarshalWireMsg(b, &gm), &gm, &wm, func() []byte { return appendWireMsg(nil, &gm) })
	var wr, gr wireReply
	checkAgree(t, b, canon.Unmarshal(b, &wr), unmarshalWireReply(b, &gr), &gr, &wr, func() []byte { return appendWireReply(nil, &gr) })
}

func checkAgree(t *testing.T, b []byte, werr, gerr error, got, want any, enc func() []byte) {
	t.Helper()
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%x as %T: canon says %v, the hand-written decoder %v", b, got, werr, gerr)
	}
	if werr != nil {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%x: decoded as %+v, canon %+v", b, got, want)
	}
	if e := enc(); !bytes.Equal(e, b) {
		t.Fatalf("%x: re-encoded as %x", b, e)
	}
}

// checkWireEncode encodes v with both encoders and fails the test unless
// the bytes are the same; then both decoders must agree on them.
func checkWireEncode(t *testing.T, v any) {
	t.Helper()
	want, err := canon.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	switch v := v.(type) {
	case *wireMsg:
		got = appendWireMsg(nil, v)
	case *wireReply:
		got = appendWireReply(nil, v)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%+v: encoded as %x, canon %x", v, got, want)
	}
	checkWireCodec(t, want)
}

func TestWireCodecEdges(t *testing.T) {
	for name, b := range wireCodecEdges {
		t.Run(name, func(t *testing.T) { checkWireCodec(t, b) })
	}
}

func TestWireCodecEncode(t *testing.T) {
	for name, v := range map[string]any{
		"zero msg":         &wireMsg{},
		"zero reply":       &wireReply{},
		"all msg":          &wireMsg{V: 1 << 40, From: "f/g", T: "x", M: make([]byte, 300), W: []string{"", "é"}},
		"all reply":        &wireReply{V: 70000, C: 300, E: "e", T: "t", M: []byte{0}, X: []wireExit{{}, {P: "p", O: 1<<64 - 1, E: "e"}}},
		"bad utf-8":        &wireMsg{V: 2, From: "\xff", W: []string{"\xc3"}},
		"empty slices":     &wireMsg{V: 2, M: []byte{}, W: []string{}},
		"empty reply list": &wireReply{V: 2, M: []byte{}, X: []wireExit{}},
	} {
		t.Run(name, func(t *testing.T) { checkWireEncode(t, v) })
	}
	for name, v := range frozen {
		t.Run(name, func(t *testing.T) {
			switch v := v.(type) {
			case wireMsg:
				checkWireEncode(t, &v)
			case wireReply:
				checkWireEncode(t, &v)
			}
		})
	}
}

// wireGen makes requests and replies out of fuzz input, every field
// optional and every length and integer width reachable.
type wireGen struct{ b []byte }

func (g *wireGen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *wireGen) uint() uint64 {
	var n uint64
	for range g.byte() % 9 {
		n = n<<8 | uint64(g.byte())
	}
	return n
}

func (g *wireGen) bytes() []byte {
	n := int(g.byte() % 32)
	if n == 31 {
		n = 300
	}
	n = min(n, len(g.b))
	s := g.b[:n]
	g.b = g.b[n:]
	return s
}

func (g *wireGen) msg() *wireMsg {
	mask := g.byte()
	on := func(bit int) bool { return mask&(1<<bit) != 0 }
	w := &wireMsg{V: uint64(g.byte() % 4)}
	if on(0) {
		w.From = string(g.bytes())
	}
	if on(1) {
		w.T = string(g.bytes())
	}
	if on(2) {
		w.M = g.bytes()
	}
	if on(3) {
		for range g.byte() % 4 {
			w.W = append(w.W, string(g.bytes()))
		}
	}
	return w
}

func (g *wireGen) reply() *wireReply {
	mask := g.byte()
	on := func(bit int) bool { return mask&(1<<bit) != 0 }
	w := &wireReply{V: uint64(g.byte() % 4)}
	if on(0) {
		w.C = g.uint()
	}
	if on(1) {
		w.E = string(g.bytes())
	}
	if on(2) {
		w.T = string(g.bytes())
	}
	if on(3) {
		w.M = g.bytes()
	}
	if on(4) {
		for range g.byte() % 4 {
			x := wireExit{P: string(g.bytes()), O: g.uint()}
			if on(5) {
				x.E = string(g.bytes())
			}
			w.X = append(w.X, x)
		}
	}
	return w
}

// FuzzWireCodec: the hand-written codec against internal/canon. The
// input is decoded by both, as a request and as a reply (same
// accept/refuse decision, same value, same bytes again), and read as
// the fields of a request and of a reply that both encode (same bytes,
// which both decoders then judge alike).
func FuzzWireCodec(f *testing.F) {
	for _, v := range frozen {
		f.Add(encode(v))
	}
	for _, b := range wireCodecEdges {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkWireCodec(t, b)
		g := &wireGen{b}
		checkWireEncode(t, g.msg())
		checkWireEncode(t, g.reply())
	})
}

// TestWriteWireCodecCorpus writes the seed corpus of FuzzWireCodec with
// BT_WRITE_FROZEN set.
func TestWriteWireCodecCorpus(t *testing.T) {
	if os.Getenv("BT_WRITE_FROZEN") == "" {
		t.Skip("BT_WRITE_FROZEN not set")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzWireCodec")
	os.MkdirAll(dir, 0o755)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range frozen {
		write("seed-"+name[:len(name)-len(".cbor")], encode(v))
	}
	for name, b := range wireCodecEdges {
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

// BenchmarkWireCodec: a call's request and reply, each encoded and
// decoded, through the hand-written codec against internal/canon.
func BenchmarkWireCodec(b *testing.B) {
	req := frozen["call-v2.cbor"].(wireMsg)
	rep := frozen["reply-v2.cbor"].(wireReply)
	var buf []byte
	ours := func() error {
		buf = appendWireMsg(buf[:0], &req)
		var m wireMsg
		if err := unmarshalWireMsg(buf, &m); err != nil {
			return err
		}
		buf = appendWireReply(buf[:0], &rep)
		var r wireReply
		return unmarshalWireReply(buf, &r)
	}
	anchor := func() error {
		enc, err := canon.Marshal(&req)
		if err != nil {
			return err
		}
		var m wireMsg
		if err := canon.Unmarshal(enc, &m); err != nil {
			return err
		}
		if enc, err = canon.Marshal(&rep); err != nil {
			return err
		}
		var r wireReply
		return canon.Unmarshal(enc, &r)
	}
	benchcmp.Compare(b, "wire-codec-call-request-and-reply-vs-canon", benchcmp.Options{Rounds: 5, Ops: 2000}, ours, anchor)
}
