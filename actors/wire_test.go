package actors

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"blocktree.dev/bt/internal/canon"
)

// encode is canon's encoding of v, the reference for wirecodec.go's.
func encode(v any) []byte {
	b, err := canon.Marshal(v)
	if err != nil { // only for values these types cannot hold
		panic(fmt.Sprintf("actors: encode %T: %v", v, err))
	}
	return b
}

const testTo = "/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/laptop/w"

// frozen are the frozen examples of wire format version 2: every build
// must read them as the same values and write the same values as the
// same bytes.
var frozen = map[string]any{
	"call-v2.cbor":  wireMsg{V: 2, From: "w/child", T: "test/ping", M: encode(Ping{N: 7})},
	"send-v2.cbor":  wireMsg{V: 2, T: "string", M: encode("hi")},
	"watch-v2.cbor": wireMsg{V: 2, W: []string{testTo}},
	"reply-v2.cbor": wireReply{V: 2, T: "test/pong", M: encode(Pong{N: 8})},
	"error-v2.cbor": wireReply{V: 2, C: codeProtocol, E: "protocol \"door\" in state \"closed\" does not accept actors.Close"},
	"exits-v2.cbor": wireReply{V: 2, X: []wireExit{{P: testTo, O: uint64(Failed), E: "gone"}}},
}

func TestFrozenWire(t *testing.T) {
	for name, v := range frozen {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join("testdata", name)
			want := encode(v)
			if os.Getenv("BT_WRITE_FROZEN") != "" {
				os.WriteFile(file, want, 0o644)
			}
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: this build writes %x, frozen %x", name, want, got)
			}
			switch v := v.(type) {
			case wireMsg:
				if _, err := decodeMsg(got, len(v.W) > 0); err != nil {
					t.Fatal(err)
				}
			case wireReply:
				if _, err := decodeReply(got); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, c := range []struct {
		name  string
		b     []byte
		watch bool
	}{
		{"empty", nil, false},
		{"v1", encode(wireMsg{V: 1, T: "x", M: []byte{1}}), false},
		{"v3", encode(wireMsg{V: 3, T: "x", M: []byte{1}}), false},
		{"no type", encode(wireMsg{V: 2, M: []byte{1}}), false},
		{"no message", encode(wireMsg{V: 2, T: "x"}), false},
		{"bad sender", encode(wireMsg{V: 2, From: "a//b", T: "x", M: []byte{1}}), false},
		{"absolute sender", encode(wireMsg{V: 2, From: "/a", T: "x", M: []byte{1}}), false},
		{"sender ..", encode(wireMsg{V: 2, From: "..", T: "x", M: []byte{1}}), false},
		{"tell with a watch list", encode(wireMsg{V: 2, T: "x", M: []byte{1}, W: []string{testTo}}), false},
		{"watch with a message", encode(wireMsg{V: 2, T: "x", M: []byte{1}, W: []string{testTo}}), true},
		{"empty watch", encode(wireMsg{V: 2}), true},
		{"bad watched path", encode(wireMsg{V: 2, W: []string{"/x//y"}}), true},
		{"trailing", append(encode(wireMsg{V: 2, T: "x", M: []byte{1}}), 0), false},
	} {
		if _, err := decodeMsg(c.b, c.watch); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if _, err := decodeReply(encode(wireReply{V: 2, C: 99})); !errors.Is(err, ErrBadMessage) {
		t.Errorf("unknown code: %v", err)
	}
}

// FuzzDecodeMsg: any input is refused with an error or decodes, as a
// watch or as a tell or call, to a request that re-encodes to the same
// bytes; never a panic.
func FuzzDecodeMsg(f *testing.F) {
	for _, v := range frozen {
		f.Add(encode(v))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, watch := range []bool{false, true} {
			d, err := decodeMsg(b, watch)
			if err != nil {
				continue
			}
			w := wireMsg{V: WireVersion, T: d.tname, M: d.data, From: strings.Join(d.from, "/")}
			for _, p := range d.watch {
				w.W = append(w.W, p.String())
			}
			if !bytes.Equal(encode(w), b) {
				t.Fatalf("%x decoded (watch %v) but re-encodes differently", b, watch)
			}
			reg, _ := newTypeRegistry(testTypes)
			reg.decode(d.tname, d.data) // must not panic
		}
	})
}

// FuzzDecodeReply: the same for replies.
func FuzzDecodeReply(f *testing.F) {
	for _, v := range frozen {
		f.Add(encode(v))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := decodeReply(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encode(*w), b) {
			t.Fatalf("%x decoded but re-encodes differently", b)
		}
		if w.C != codeOK {
			errOf("call", mustParse(testTo), w.C, w.E)
		}
	})
}

// TestCutValidUTF8: an error text cut to fit, or not valid UTF-8 to
// begin with, still makes a reply the caller reads.
func TestCutValidUTF8(t *testing.T) {
	for name, s := range map[string]string{
		"cut in a rune": strings.Repeat("a", maxErrText-1) + "é and more",
		"invalid":       "bad \xff byte",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeReply(errReply(errors.New(s))); err != nil {
				t.Fatal(err)
			}
		})
	}
}
