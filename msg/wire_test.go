package msg

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

var (
	update   = flag.Bool("update", false, "rewrite testdata/ frozen examples")
	frozenT0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
)

// frozenTarget and frozenWritecap come from caps' frozen examples: a
// writecap and the path it covers.
func frozenWritecap(t testing.TB) (paths.Path, []byte) {
	t.Helper()
	target, err := os.ReadFile(filepath.Join("..", "caps", "testdata", "writecap-v1.target"))
	if err != nil {
		t.Fatal(err)
	}
	wc, err := os.ReadFile(filepath.Join("..", "caps", "testdata", "writecap-v1.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := paths.Parse(strings.TrimSpace(string(target)))
	if err != nil {
		t.Fatal(err)
	}
	return p, wc
}

// frozen are the examples under testdata/: every build must read them as
// these values and encode these values as them.
func frozen(t testing.TB) (req request, resps map[string]response) {
	to, wc := frozenWritecap(t)
	req = request{To: to, Call: true, Size: 5, Deadline: frozenT0.Add(30 * time.Second), Writecap: wc}
	resps = map[string]response{
		"response-v1.cbor":       {Kind: kindOK, Size: 5},
		"response-error-v1.cbor": {Kind: kindHandler, Msg: "no such file: report.txt"},
	}
	return req, resps
}

func TestFrozenExamples(t *testing.T) {
	req, resps := frozen(t)
	frame, err := appendRequest(nil, &req)
	if err != nil {
		t.Fatal(err)
	}
	enc := map[string][]byte{"request-v1.cbor": headerOf(t, frame)}
	for name, r := range resps {
		frame, err := appendResponse(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		enc[name] = headerOf(t, frame)
	}
	if *update {
		for name, b := range enc {
			if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, want := range enc {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, want) {
				t.Errorf("this build encodes %s differently:\n got %x\nwant %x", name, want, raw)
			}
			if name == "request-v1.cbor" {
				got, err := decodeRequest(raw)
				if err != nil || got.To != req.To || got.Call != req.Call || got.Size != req.Size ||
					!got.Deadline.Equal(req.Deadline) || !bytes.Equal(got.Writecap, req.Writecap) {
					t.Fatalf("frozen request decodes to %+v, %v; want %+v", got, err, req)
				}
				return
			}
			got, err := decodeResponse(raw)
			if err != nil || got != resps[name] {
				t.Fatalf("frozen response decodes to %+v, %v; want %+v", got, err, resps[name])
			}
		})
	}
}

// headerOf strips a frame's length prefix, checking it.
func headerOf(t testing.TB, frame []byte) []byte {
	t.Helper()
	l, n := binary.Uvarint(frame)
	if n <= 0 || int(l) != len(frame)-n {
		t.Fatalf("frame of %d bytes has length prefix %d", len(frame), l)
	}
	return frame[n:]
}

// Values at the edges of each CBOR integer width.
var edgeUints = []uint64{0, 1, 23, 24, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64}

func TestCodecMatchesCanon(t *testing.T) {
	to, wc := frozenWritecap(t)
	long := paths.MustParse(to.RootPath().String() + "/" + strings.Repeat("x", 255) + "/" + strings.Repeat("é", 120))
	for _, tc := range []struct {
		name string
		w    wireRequest
	}{
		{"minimal", wireRequest{V: 1, To: to.String()}},
		{"call-with-writecap", wireRequest{V: 1, To: to.String(), Call: true, Size: 64, Deadline: frozenT0.UnixNano(), Writecap: wc}},
		{"long-path", wireRequest{V: 1, To: long.String(), Size: 1 << 30}},
		{"big-writecap", wireRequest{V: 1, To: to.String(), Writecap: bytes.Repeat([]byte{7}, 16<<10)}},
		{"version-7", wireRequest{V: 7, To: "x"}},
	} {
		for _, u := range edgeUints {
			w := tc.w
			w.Size, w.Deadline = u, int64(u)
			t.Run(fmt.Sprintf("request-%s-%d", tc.name, u), func(t *testing.T) {
				checkRequestCodec(t, w)
			})
		}
	}
	for _, msg := range []string{"", "m", strings.Repeat("ü", MaxErrorMessage/2)} {
		for _, u := range edgeUints {
			w := wireResponse{V: 1, Kind: uint(u % 256), Msg: msg, Size: u}
			t.Run(fmt.Sprintf("response-%d-%d", len(msg), u), func(t *testing.T) {
				want, err := canon.Marshal(&w)
				if err != nil {
					t.Fatal(err)
				}
				got := encodeResponseHeader(nil, &w)
				if !bytes.Equal(got, want) {
					t.Fatalf("fast encoding %x, canon %x", got, want)
				}
				back, ok := parseResponseFast(got)
				if !ok || back != w {
					t.Fatalf("fast parse: %+v, %v; want %+v", back, ok, w)
				}
			})
		}
	}
}

func checkRequestCodec(t *testing.T, w wireRequest) {
	t.Helper()
	want, err := canon.Marshal(&w)
	if err != nil {
		t.Fatal(err)
	}
	got := encodeRequestHeader(nil, &w)
	if !bytes.Equal(got, want) {
		t.Fatalf("fast encoding %x, canon %x", got, want)
	}
	back, ok := parseRequestFast(got)
	if !ok || !reflect.DeepEqual(back, w) {
		t.Fatalf("fast parse: %+v, %v; want %+v", back, ok, w)
	}
}

func TestDecodeRequestRefuses(t *testing.T) {
	to, _ := frozenWritecap(t)
	good := map[string]any{"v": 1, "to": to.String(), "call": true, "size": 1, "dl": 0}
	with := func(k string, v any) map[string]any {
		m := make(map[string]any, len(good)+1)
		for k, v := range good {
			m[k] = v
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	enc := func(v any) []byte { return mustMarshal(t, v) }
	nonCanonicalSize := bytes.Replace(enc(good), []byte("\x64size\x01"), []byte("\x64size\x18\x01"), 1)
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrBadMessage},
		{"not-a-map", []byte{0x01}, ErrBadMessage},
		{"version-2", enc(with("v", 2)), ErrUnknownVersion},
		{"version-0", enc(with("v", 0)), ErrUnknownVersion},
		{"unknown-field", enc(with("x", 1)), ErrBadMessage},
		{"missing-to", enc(with("to", nil)), ErrBadMessage},
		{"negative-deadline", enc(with("dl", -1)), ErrBadMessage},
		{"empty-writecap", enc(with("wc", []byte{})), ErrBadMessage},
		{"size-too-big", enc(with("size", uint64(math.MaxInt64)+1)), ErrBadMessage},
		{"call-not-bool", enc(with("call", 1)), ErrBadMessage},
		{"bad-path", enc(with("to", "/x")), ErrBadMessage},
		{"non-canonical-int", nonCanonicalSize, ErrBadMessage},
		{"trailing-byte", append(enc(good), 0), ErrBadMessage},
		{"too-long", make([]byte, MaxRequestHeader+1), ErrBadMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeRequest(tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("decodeRequest = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := decodeRequest(enc(good)); err != nil {
		t.Fatalf("the good header: %v", err)
	}
}

func TestDecodeResponseRefuses(t *testing.T) {
	good := map[string]any{"v": 1, "kind": 0, "size": 3}
	enc := func(v any) []byte { return mustMarshal(t, v) }
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"version-2", enc(map[string]any{"v": 2, "kind": 0, "size": 3}), ErrUnknownVersion},
		{"error-with-body", enc(map[string]any{"v": 1, "kind": 4, "size": 3}), ErrBadMessage},
		{"empty-msg", enc(map[string]any{"v": 1, "kind": 4, "size": 0, "msg": ""}), ErrBadMessage},
		{"kind-too-big", enc(map[string]any{"v": 1, "kind": 256, "size": 0}), ErrBadMessage},
		{"msg-too-long", enc(map[string]any{"v": 1, "kind": 4, "size": 0, "msg": strings.Repeat("x", MaxErrorMessage+10)}), ErrBadMessage},
		{"unknown-field", enc(map[string]any{"v": 1, "kind": 0, "size": 0, "x": 0}), ErrBadMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeResponse(tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("decodeResponse = %v, want %v", err, tc.want)
			}
		})
	}
	if r, err := decodeResponse(enc(good)); err != nil || r.Size != 3 {
		t.Fatalf("the good header: %+v, %v", r, err)
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		s    string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"longer text", 6, "longer…"},
		{"ééé", 3, "é…"}, // never inside a rune
	} {
		if got := truncate(tc.s, tc.max); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.s, tc.max, got, tc.want)
		}
	}
	r := &response{Kind: kindHandler, Msg: "bad \xff utf-8"}
	frame, err := appendResponse(nil, r)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeResponse(headerOf(t, frame)); err != nil || got.Msg != "bad \uFFFD utf-8" {
		t.Fatalf("invalid UTF-8 in a message: %+v, %v", got, err)
	}
}

func TestReadSelected(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"accepted", selectPrefix, nil},
		{"na", appendToken(appendToken(nil, "/multistream/1.0.0"), "na"), errNoProtocol},
		{"other-protocol", appendToken(appendToken(nil, "/multistream/1.0.0"), "/x/1.0.0"), ErrBadMessage},
		{"no-newline", []byte{3, 'a', 'b', 'c'}, ErrBadMessage},
		{"too-long", binary.AppendUvarint(nil, maxToken+1), ErrBadMessage},
		{"cut", selectPrefix[:5], nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := readSelected(bufio.NewReader(bytes.NewReader(tc.in)))
			if tc.name == "cut" {
				if err == nil {
					t.Fatal("a cut answer was accepted")
				}
				return
			}
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("readSelected = %v, want %v", err, tc.want)
			}
		})
	}
}

// Fuzz targets for every decoder of this package. Seed corpora live in
// testdata/fuzz/<Name>/; the frozen examples are seeds too.

func frozenSeeds(f *testing.F) {
	for _, name := range []string{"request-v1.cbor", "response-v1.cbor", "response-error-v1.cbor"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzDecodeRequest: decodeRequest never panics, and what it accepts is
// canonical: it encodes back to the input, and canon accepts it too.
func FuzzDecodeRequest(f *testing.F) {
	frozenSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		q, err := decodeRequest(data)
		if err != nil {
			return
		}
		frame, err := appendRequest(nil, &q)
		if err != nil {
			t.Fatalf("an accepted header does not encode: %v", err)
		}
		if !bytes.Equal(headerOf(t, frame), data) {
			t.Fatalf("accepted %x, which encodes back as %x", data, headerOf(t, frame))
		}
		var w wireRequest
		if err := canon.Unmarshal(data, &w); err != nil {
			t.Fatalf("accepted what canon refuses: %v", err)
		}
	})
}

// FuzzDecodeResponse: likewise for response headers.
func FuzzDecodeResponse(f *testing.F) {
	frozenSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeResponse(data)
		if err != nil {
			return
		}
		frame, err := appendResponse(nil, &r)
		if err != nil {
			t.Fatalf("an accepted header does not encode: %v", err)
		}
		if !bytes.Equal(headerOf(t, frame), data) {
			t.Fatalf("accepted %x, which encodes back as %x", data, headerOf(t, frame))
		}
	})
}

// FuzzParseFast: the fast parsers accept only what canon accepts, with
// the same values, so that handing everything else to canon changes
// nothing.
func FuzzParseFast(f *testing.F) {
	frozenSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if w, ok := parseRequestFast(data); ok {
			var c wireRequest
			if err := canon.Unmarshal(data, &c); err != nil || !reflect.DeepEqual(c, w) {
				t.Fatalf("fast request parse %+v; canon %+v, %v", w, c, err)
			}
		}
		if w, ok := parseResponseFast(data); ok {
			var c wireResponse
			if err := canon.Unmarshal(data, &c); err != nil || c != w {
				t.Fatalf("fast response parse %+v; canon %+v, %v", w, c, err)
			}
		}
	})
}

// FuzzReadStream: what a receiver and a sender read off a stream — the
// length-prefixed request header, or the multistream answer and the
// response — never panics and never reads past the bounds.
func FuzzReadStream(f *testing.F) {
	req, resps := frozen(f)
	frame, err := appendRequest(nil, &req)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(frame)
	for _, r := range resps {
		frame, err := appendResponse(append([]byte(nil), selectPrefix...), &r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), readerSize)
		if h, err := readHeader(br, MaxRequestHeader); err == nil {
			if len(h) > MaxRequestHeader {
				t.Fatalf("header of %d bytes read", len(h))
			}
			_, _ = decodeRequest(h)
		}
		br = bufio.NewReaderSize(bytes.NewReader(data), readerSize)
		if readSelected(br) == nil {
			if h, err := readHeader(br, MaxResponseHeader); err == nil {
				_, _ = decodeResponse(h)
			}
		}
	})
}
