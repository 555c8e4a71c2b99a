package actors

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// frozenFrames are the frozen examples of stream frame version 1.
var frozenFrames = map[string]wireFrame{
	"frame-hello-v1.cbor":   {V: 1, K: kindHello},
	"frame-welcome-v1.cbor": {V: 1, K: kindWelcome, N: DefaultWindow, P: DefaultTargetWindow},
	"frame-refuse-v1.cbor":  {V: 1, K: kindWelcome, C: codeDenied, E: "peer has not proven a path"},
	"frame-call-v1.cbor":    {V: 1, K: kindCall, I: 7, D: 1767225600000000000, To: testTo, From: testTo + "/child", T: "test/ping", M: encode(Ping{N: 7})},
	"frame-send-v1.cbor":    {V: 1, K: kindSend, I: 8, D: 1767225600000000000, To: testTo, T: "string", M: encode("hi")},
	"frame-watch-v1.cbor":   {V: 1, K: kindWatch, I: 9, W: []string{testTo}},
	"frame-reply-v1.cbor":   {V: 1, K: kindReply, I: 7, T: "test/pong", M: encode(Pong{N: 8})},
	"frame-error-v1.cbor":   {V: 1, K: kindReply, I: 8, C: codeMailboxFull, E: "mailbox of 1 stayed full"},
	"frame-exits-v1.cbor":   {V: 1, K: kindReply, I: 9, X: []wireExit{{P: testTo, O: uint64(Failed), E: "gone"}}},
	"frame-ack-v1.cbor":     {V: 1, K: kindAck, A: []uint64{1, 2, 3, 8}},
}

// TestFrozenFrames: every build reads the frozen frames as the same
// values and writes the same values as the same bytes.
func TestFrozenFrames(t *testing.T) {
	for name, v := range frozenFrames {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join("testdata", name)
			want := encode(v)
			if os.Getenv("BT_WRITE_FROZEN") != "" {
				os.WriteFile(file, want, 0o644)
				seed := filepath.Join("testdata", "fuzz", "FuzzDecodeFrame", "seed-"+name[:len(name)-len(".cbor")])
				os.WriteFile(seed, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", want), 0o644)
			}
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: this build writes %x, frozen %x", name, want, got)
			}
			if _, err := decodeFrame(got); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDecodeFrameRefuses(t *testing.T) {
	call := wireFrame{V: 1, K: kindCall, I: 1, To: testTo, T: "x", M: []byte{1}}
	with := func(f func(*wireFrame)) []byte {
		w := call
		f(&w)
		return encode(w)
	}
	for name, b := range map[string][]byte{
		"empty":            nil,
		"v2":               with(func(w *wireFrame) { w.V = 2 }),
		"no id":            with(func(w *wireFrame) { w.I = 0 }),
		"negative dl":      with(func(w *wireFrame) { w.D = -1 }),
		"call with code":   with(func(w *wireFrame) { w.C = 1 }),
		"call with acks":   with(func(w *wireFrame) { w.A = []uint64{1} }),
		"bad path":         with(func(w *wireFrame) { w.To = "/x//y" }),
		"unknown kind":     with(func(w *wireFrame) { w.K = 9 }),
		"trailing":         append(encode(call), 0),
		"empty ack":        encode(wireFrame{V: 1, K: kindAck}),
		"ack of 0":         encode(wireFrame{V: 1, K: kindAck, A: []uint64{0}}),
		"reply without id": encode(wireFrame{V: 1, K: kindReply}),
		"reply code 12":    encode(wireFrame{V: 1, K: kindReply, I: 1, C: codeDenied}),
		"reply with to":    encode(wireFrame{V: 1, K: kindReply, I: 1, To: testTo}),
		"hello with id":    encode(wireFrame{V: 1, K: kindHello, I: 1}),
		"welcome no n":     encode(wireFrame{V: 1, K: kindWelcome, P: 1}),
		"welcome p > n":    encode(wireFrame{V: 1, K: kindWelcome, N: 1, P: 2}),
		"welcome huge":     encode(wireFrame{V: 1, K: kindWelcome, N: maxWindow + 1, P: 1}),
		"refusal with n":   encode(wireFrame{V: 1, K: kindWelcome, C: codeDenied, N: 1}),
	} {
		if _, err := decodeFrame(b); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := decodeFrame(with(func(w *wireFrame) { w.V = 2 })); err == nil || !bytes.Contains([]byte(err.Error()), []byte("unknown frame version 2")) {
		t.Errorf("v2: %v", err)
	}
}

func TestReadFrame(t *testing.T) {
	b, err := appendFrame(nil, &wireFrame{K: kindHello})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = appendFrame(b, &wireFrame{K: kindAck, A: []uint64{5}})
	br := bufio.NewReader(bytes.NewReader(b))
	for _, k := range []uint64{kindHello, kindAck} {
		fb, err := readFrame(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if f, err := decodeFrame(fb); err != nil || f.kind != k {
			t.Fatalf("frame %+v, %v; want kind %d", f, err, k)
		}
	}
	for name, in := range map[string][]byte{
		"zero length": {0, 0, 0, 0},
		"too long":    {0xff, 0xff, 0xff, 0xff, 1},
	} {
		if _, err := readFrame(bufio.NewReader(bytes.NewReader(in)), nil); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzDecodeFrame: any input is refused with an error or decodes to a
// frame that re-encodes to the same bytes; never a panic.
func FuzzDecodeFrame(f *testing.F) {
	for _, v := range frozenFrames {
		f.Add(encode(v))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		w := wireFrame{V: 1, K: fr.kind, I: fr.id, A: fr.acks, WC: fr.wc, N: uint64(fr.n), P: uint64(fr.p)}
		if !fr.dl.IsZero() {
			w.D = fr.dl.UnixNano()
		}
		if d := fr.req; d != nil {
			w.T, w.M = d.tname, d.data
			if !d.to.IsZero() {
				w.To = d.to.String()
			}
			if !d.from.IsZero() {
				w.From = d.from.String()
			}
			for _, p := range d.watch {
				w.W = append(w.W, p.String())
			}
		}
		if r := fr.rep; r != nil {
			w.C, w.E, w.T, w.M, w.X = r.C, r.E, r.T, r.M, r.X
		}
		if !bytes.Equal(encode(w), b) {
			t.Fatalf("%x decoded but re-encodes differently", b)
		}
	})
}

// FuzzReadFrame: the length-prefixed reader never panics, never returns
// more than the limit, and what it returns decodes or is refused.
func FuzzReadFrame(f *testing.F) {
	for _, v := range frozenFrames {
		b, _ := appendFrame(nil, &v)
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		var buf []byte
		for {
			b, err := readFrame(br, buf)
			if err != nil {
				return
			}
			if len(b) == 0 || len(b) > maxFrame {
				t.Fatalf("frame of %d bytes", len(b))
			}
			decodeFrame(b)
			buf = b
		}
	})
}
