package actors

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

const testTo = "/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/laptop/w"

// frozen are the frozen examples of wire format version 1: every build
// must read them as the same values and write the same values as the
// same bytes.
var frozen = map[string]any{
	"call-v1.cbor":  wireMsg{V: 1, K: kindCall, To: testTo, From: testTo + "/child", T: "test/ping", M: encode(Ping{N: 7})},
	"send-v1.cbor":  wireMsg{V: 1, K: kindSend, To: testTo, T: "string", M: encode("hi")},
	"watch-v1.cbor": wireMsg{V: 1, K: kindWatch, W: []string{testTo}},
	"reply-v1.cbor": wireReply{V: 1, T: "test/pong", M: encode(Pong{N: 8})},
	"error-v1.cbor": wireReply{V: 1, C: codeProtocol, E: "protocol \"door\" in state \"closed\" does not accept actors.Close"},
	"exits-v1.cbor": wireReply{V: 1, X: []wireExit{{P: testTo, O: uint64(Failed), E: "gone"}}},
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
			switch v.(type) {
			case wireMsg:
				if _, err := decodeMsg(got); err != nil {
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
	for name, b := range map[string][]byte{
		"empty":         nil,
		"v2":            encode(wireMsg{V: 2, K: kindSend, To: testTo, T: "x", M: []byte{1}}),
		"no type":       encode(wireMsg{V: 1, K: kindSend, To: testTo, M: []byte{1}}),
		"bad path":      encode(wireMsg{V: 1, K: kindCall, To: "/x//y", T: "x", M: []byte{1}}),
		"unknown kind":  encode(wireMsg{V: 1, K: 9, To: testTo, T: "x", M: []byte{1}}),
		"watch with to": encode(wireMsg{V: 1, K: kindWatch, To: testTo, W: []string{testTo}}),
		"trailing":      append(encode(wireMsg{V: 1, K: kindSend, To: testTo, T: "x", M: []byte{1}}), 0),
	} {
		if _, err := decodeMsg(b); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := decodeReply(encode(wireReply{V: 1, C: 99})); !errors.Is(err, ErrBadMessage) {
		t.Errorf("unknown code: %v", err)
	}
}

// FuzzDecodeMsg: any input is refused with an error or decodes to a
// request that re-encodes to the same bytes; never a panic.
func FuzzDecodeMsg(f *testing.F) {
	for _, v := range frozen {
		f.Add(encode(v))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeMsg(b)
		if err != nil {
			return
		}
		w := wireMsg{V: 1, K: d.kind, T: d.tname, M: d.data}
		if !d.to.IsZero() {
			w.To = d.to.String()
		}
		if !d.from.IsZero() {
			w.From = d.from.String()
		}
		for _, p := range d.watch {
			w.W = append(w.W, p.String())
		}
		if !bytes.Equal(encode(w), b) {
			t.Fatalf("%x decoded but re-encodes differently", b)
		}
		reg, _ := newTypeRegistry(testTypes)
		reg.decode(d.tname, d.data) // must not panic
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
