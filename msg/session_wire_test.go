package msg

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// sessionSeeds are well-formed frames of each type, the fuzz corpus's
// seeds (testdata/fuzz/FuzzSessionFrame, written by
// BT_WRITE_SEEDS=1 go test -run TestSessionSeeds).
func sessionSeeds() map[string][]byte {
	req := func(typ byte, payload string) []byte {
		b, start := appendRequestHead(nil, &sreq{typ: typ, id: 7, deadline: 1_700_000_000_000_000_000, to: "/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo/desk/inbox", writecap: []byte{0xa1}})
		return frameEnd(append(b, payload...), start)
	}
	return map[string][]byte{
		"hello":        appendHello(nil, [][]byte{{0xa1, 0x01}, {0xa2}}),
		"welcome":      appendWelcome(nil, &welcome{kind: kindOK, window: DefaultWindow, targetWindow: DefaultTargetWindow, bytes: DefaultWindowBytes, maxMessage: DefaultMaxMessage}),
		"welcome-busy": appendWelcome(nil, &welcome{kind: kindBusy, msg: "too many sessions"}),
		"send":         req(frameSend, "hello"),
		"confirm":      req(frameConfirm, ""),
		"call":         req(frameCall, "ping"),
		"reply":        appendReply(nil, 7, kindOK, "", 4, []byte("pong")),
		"reply-parts":  appendReply(nil, 8, kindOK, "", SessionMax+1, make([]byte, 16)),
		"refusal":      appendReply(nil, 9, kindNoEndpoint, "node has no handler", 0, nil),
		"more":         appendMore(nil, 8, []byte("rest")),
		"ack":          appendAck(nil, []uint64{1, 2, 300, 1 << 40}),
		"forwarded": func() []byte {
			b, start := appendRequestHead(nil, &sreq{typ: frameFwdCall, id: 3, to: "/r/n/svc", from: []byte("/r/m"), fromNode: []byte("12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo")})
			return frameEnd(append(b, "hi"...), start)
		}(),
	}
}

func TestSessionSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzSessionFrame")
	for name, f := range sessionSeeds() {
		if os.Getenv("BT_WRITE_SEEDS") != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := decodeSessionFrame(f); err != nil {
			t.Errorf("seed %s does not decode: %v", name, err)
		}
	}
}

// decodeSessionFrame reads one frame as either side would and decodes
// it; it is what the fuzz target drives.
func decodeSessionFrame(data []byte) (any, error) {
	br := bytes.NewReader(data)
	f, err := sessionFraming.Next(readerOf(br))
	if err != nil {
		return nil, err
	}
	typ, fields, err := frameType(f)
	if err != nil {
		return nil, err
	}
	switch typ {
	case frameHello:
		return decodeHello(fields)
	case frameWelcome:
		return decodeWelcome(fields)
	case frameSend, frameConfirm, frameCall, frameFwdSend, frameFwdConfirm, frameFwdCall:
		return decodeRequestFrame(typ, fields)
	case frameReply:
		return decodeReply(fields)
	case frameMore:
		id, part, err := decodeMore(fields)
		return [2]any{id, part}, err
	case frameAck:
		return decodeAck(fields, nil)
	}
	return nil, fmt.Errorf("type %d: %w", typ, errSession)
}

func TestSessionRoundTrip(t *testing.T) {
	wcs := [][]byte{{1, 2, 3}, {4}}
	got, err := decodeSessionFrame(appendHello(nil, wcs))
	if err != nil || fmt.Sprint(got) != fmt.Sprint(wcs) {
		t.Fatalf("hello = %v, %v; want %v", got, err, wcs)
	}
	w := welcome{kind: kindOK, window: 10, targetWindow: 5, bytes: SessionMax, maxMessage: 99}
	if got, err := decodeSessionFrame(appendWelcome(nil, &w)); err != nil || got != w {
		t.Fatalf("welcome = %+v, %v; want %+v", got, err, w)
	}
	b, start := appendRequestHead(nil, &sreq{typ: frameCall, id: 1 << 33, deadline: 5, to: "/x/y", writecap: []byte{9}})
	got, err = decodeSessionFrame(frameEnd(append(b, "body"...), start))
	q, _ := got.(sreq)
	if err != nil || q.id != 1<<33 || q.deadline != 5 || string(q.toBytes) != "/x/y" || string(q.writecap) != "\x09" || string(q.payload) != "body" || q.typ != frameCall {
		t.Fatalf("call = %+v, %v", got, err)
	}
	got, err = decodeSessionFrame(appendReply(nil, 3, kindHandler, "boom", 0, nil))
	if rep, _ := got.(srep); err != nil || rep.id != 3 || rep.kind != kindHandler || rep.msg != "boom" {
		t.Fatalf("reply = %+v, %v", got, err)
	}
	got, err = decodeSessionFrame(appendAck(nil, []uint64{5, 6}))
	if err != nil || fmt.Sprint(got) != "[5 6]" {
		t.Fatalf("ack = %v, %v", got, err)
	}
}

func TestSessionFrameRefusals(t *testing.T) {
	okReq := func(payload []byte) []byte {
		b, start := appendRequestHead(nil, &sreq{typ: frameSend, id: 1, to: "/x/y"})
		return frameEnd(append(b, payload...), start)
	}
	for name, f := range map[string][]byte{
		"empty-frame":         {0},
		"unknown-type":        {1, 99},
		"hello-version":       {3, frameHello, 2, 0},
		"hello-too-many-caps": {3, frameHello, 1, 200},
		"hello-trailing":      {4, frameHello, 1, 0, 7},
		"welcome-zero-window": appendWelcome(nil, &welcome{kind: kindOK, window: 0, targetWindow: 0, bytes: SessionMax}),
		"welcome-target-over": appendWelcome(nil, &welcome{kind: kindOK, window: 2, targetWindow: 3, bytes: SessionMax}),
		"request-cut":         okReq(nil)[:4],
		"request-too-large":   okReq(make([]byte, SessionMax+1)),
		"reply-error-body":    appendReply(nil, 1, kindDenied, "no", 3, []byte("abc")),
		"reply-short-part":    appendReply(nil, 1, kindOK, "", 10, []byte("abc")),
		"more-empty":          appendMore(nil, 1, nil),
		"ack-empty":           {1, frameAck},
		"ack-cut-varint":      {2, frameAck, 0x80},
		"length-over-bound":   {0xff, 0xff, 0xff, 0x7f},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeSessionFrame(f); err == nil {
				t.Fatalf("frame %x decoded, want an error", f)
			}
		})
	}
	if _, err := decodeSessionFrame([]byte{3, frameHello, 9, 0}); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("hello of version 9: %v, want ErrUnknownVersion", err)
	}
}

// FuzzSessionFrame: a session frame from the network, of any type, never
// panics, and what decodes stays within the bounds.
func FuzzSessionFrame(f *testing.F) {
	for _, s := range sessionSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeSessionFrame(data)
		if err != nil {
			return
		}
		switch v := v.(type) {
		case sreq:
			if len(v.payload) > SessionMax || v.deadline < 0 {
				t.Fatalf("request out of bounds: %d bytes, deadline %d", len(v.payload), v.deadline)
			}
		case srep:
			if v.size < int64(len(v.payload)) || (v.kind != kindOK && v.size != 0) {
				t.Fatalf("reply out of bounds: %+v", v)
			}
		case [][]byte:
			if len(v) > maxHelloCaps {
				t.Fatalf("hello of %d writecaps", len(v))
			}
		}
	})
}

func readerOf(r *bytes.Reader) *bufio.Reader { return bufio.NewReaderSize(r, sessionReadBuf) }
