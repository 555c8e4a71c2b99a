package exchange

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
)

// fixed values for the frozen example and the seed corpora.
var (
	fixedData = []byte("blocktree exchange v1 example block")
	fixedCID  = blocks.Sum(fixedData)
	fixedCID2 = blocks.Sum([]byte("another"))
)

// exampleFrames returns one frame of every type, built from fixed values:
// what testdata/frames-v1.bin holds.
func exampleFrames() [][]byte {
	return [][]byte{
		appendFrame(nil, ftWant, appendWant(nil, []cid.Cid{fixedCID, fixedCID2})),
		appendFrame(nil, ftBlock, append(appendCID(nil, fixedCID), fixedData...)),
		appendFrame(nil, ftHaveNot, appendCID(nil, fixedCID2)),
		appendFrame(nil, ftError, appendError(nil, codeBusy, "busy: retry later")),
		appendFrame(nil, ftReplicate, appendReplicate(nil, &replicateFrame{Pin: "file1", Root: fixedCID, More: true, Total: 2, CIDs: []cid.Cid{fixedCID}})),
		appendFrame(nil, ftReplicate, appendReplicate(nil, &replicateFrame{Pin: "file1", Root: fixedCID, Total: 2, CIDs: []cid.Cid{fixedCID2}})),
		appendFrame(nil, ftProgress, appendProgress(nil, 1, 2)),
		appendFrame(nil, ftAck, nil),
		appendFrame(nil, ftUnrepl, append([]byte{5}, "file1"...)),
	}
}

// TestFrozenFrames: this build reads the version-1 example frames as the
// same values and writes those values as the same bytes.
func TestFrozenFrames(t *testing.T) {
	raw, err := os.ReadFile("testdata/frames-v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	if want := bytes.Join(exampleFrames(), nil); !bytes.Equal(raw, want) {
		t.Fatalf("encoding changed:\n got %x\nwant %x", want, raw)
	}
	r := bufio.NewReader(bytes.NewReader(raw))
	var types []frameType
	for {
		ty, body, err := readFrame(r, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, ty)
		if err := decodeAny(ty, body); err != nil {
			t.Fatalf("%s: %v", ty, err)
		}
		switch ty {
		case ftWant:
			cs, _ := decodeWant(body)
			if !slices.Equal(cs, []cid.Cid{fixedCID, fixedCID2}) {
				t.Errorf("want: %v", cs)
			}
		case ftBlock:
			c, d, _ := decodeBlock(body)
			if c != fixedCID || !bytes.Equal(d, fixedData) {
				t.Errorf("block: %s %q", c, d)
			}
		case ftError:
			code, text, _ := decodeError(body)
			if code != codeBusy || text != "busy: retry later" {
				t.Errorf("error: %d %q", code, text)
			}
		case ftProgress:
			d, n, _ := decodeProgress(body)
			if d != 1 || n != 2 {
				t.Errorf("progress: %d/%d", d, n)
			}
		}
	}
	want := []frameType{ftWant, ftBlock, ftHaveNot, ftError, ftReplicate, ftReplicate, ftProgress, ftAck, ftUnrepl}
	if !slices.Equal(types, want) {
		t.Fatalf("frame types %v, want %v", types, want)
	}
}

func TestReadFrameRefuses(t *testing.T) {
	blockMax, _ := maxBody(ftBlock)
	for name, in := range map[string][]byte{
		"version 2":          {2, byte(ftAck), 0},
		"version 0":          {0, byte(ftAck), 0},
		"unknown type":       {1, 99, 0},
		"oversized block":    appendHeader(nil, ftBlock, blockMax+1),
		"oversized want":     appendHeader(nil, ftWant, WireMaxWant*(1+maxCIDLen)+100),
		"ack with body":      appendHeader(nil, ftAck, 1),
		"overflowing length": {1, byte(ftBlock), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := readFrame(bufio.NewReader(bytes.NewReader(in)), nil)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
		})
	}
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(nil)), nil); err != io.EOF {
		t.Fatalf("empty input: %v, want io.EOF", err)
	}
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader([]byte{1, byte(ftWant), 5, 1})), nil); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut frame: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	cb := fixedCID.Bytes()
	for name, tc := range map[string]struct {
		t    frameType
		body []byte
	}{
		"empty want":          {ftWant, []byte{0}},
		"want count too big":  {ftWant, appendWant(nil, make([]cid.Cid, WireMaxWant+1))},
		"want trailing":       {ftWant, append(appendWant(nil, []cid.Cid{fixedCID}), 0)},
		"want short":          {ftWant, []byte{2, byte(len(cb))}},
		"want bad cid":        {ftWant, []byte{1, 3, 1, 2, 3}},
		"want non-minimal":    {ftWant, append([]byte{0x81, 0x00}, appendCID(nil, fixedCID)...)},
		"block no cid":        {ftBlock, []byte{0}},
		"have-not trailing":   {ftHaveNot, append(appendCID(nil, fixedCID), 1)},
		"error empty":         {ftError, nil},
		"error bad utf8":      {ftError, []byte{1, 0xff}},
		"replicate empty pin": {ftReplicate, appendReplicate(nil, &replicateFrame{Total: 0})},
		"replicate more 2":    {ftReplicate, []byte{1, 'a', 0, 2, 0, 0}},
		"replicate over":      {ftReplicate, appendReplicate(nil, &replicateFrame{Pin: "a", Total: 1, CIDs: []cid.Cid{fixedCID, fixedCID2}})},
		"progress backwards":  {ftProgress, appendProgress(nil, 3, 2)},
		"unrepl NUL":          {ftUnrepl, []byte{2, 'a', 0}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := decodeAny(tc.t, tc.body); !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
		})
	}
}

// decodeAny decodes a body of type t.
func decodeAny(t frameType, body []byte) error {
	var err error
	switch t {
	case ftWant:
		_, err = decodeWant(body)
	case ftBlock:
		_, _, err = decodeBlock(body)
	case ftHaveNot:
		_, err = decodeHaveNot(body)
	case ftError:
		_, _, err = decodeError(body)
	case ftReplicate:
		_, err = decodeReplicate(body)
	case ftProgress:
		_, _, err = decodeProgress(body)
	case ftUnrepl:
		_, err = decodeUnrepl(body)
	case ftAck:
		if len(body) != 0 {
			err = fmt.Errorf("%w: ack with a body", ErrProtocol)
		}
	}
	return err
}

// bodyOf strips a frame's header from an example frame.
func bodyOf(frame []byte) []byte {
	_, body, err := readFrame(bufio.NewReader(bytes.NewReader(frame)), nil)
	if err != nil {
		panic(err)
	}
	return body
}

// seeds are the seed inputs of each fuzz target, also written to
// testdata/fuzz/<target>/ by TestWriteCorpus.
func seeds() map[string][][]byte {
	fr := exampleFrames()
	return map[string][][]byte{
		"FuzzReadFrame":         {bytes.Join(fr, nil), fr[0], fr[1], {1, 2, 0xff, 0xff, 0x7f}, {9}},
		"FuzzDecodeWant":        {bodyOf(fr[0]), {0}, {1, 0}},
		"FuzzDecodeBlock":       {bodyOf(fr[1]), {0}, {36}},
		"FuzzDecodeHaveNot":     {bodyOf(fr[2]), {}},
		"FuzzDecodeError":       {bodyOf(fr[3]), {2}},
		"FuzzDecodeReplicate":   {bodyOf(fr[4]), bodyOf(fr[5]), {1, 'a', 0, 0, 0, 0}},
		"FuzzDecodeProgress":    {bodyOf(fr[6]), {0, 0}},
		"FuzzDecodeUnreplicate": {bodyOf(fr[8]), {0}},
	}
}

// TestWriteCorpus rewrites the frozen example and the seed corpora; run
// with BT_WRITE_CORPUS=1 after a deliberate format change (and bump the
// wire version).
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("BT_WRITE_CORPUS") == "" {
		t.Skip("set BT_WRITE_CORPUS=1 to rewrite testdata")
	}
	if err := os.WriteFile("testdata/frames-v1.bin", bytes.Join(exampleFrames(), nil), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, ins := range seeds() {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, in := range ins {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func addSeeds(f *testing.F) {
	for _, in := range seeds()[f.Name()] {
		f.Add(in)
	}
}

func FuzzReadFrame(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for range 64 {
			ty, body, err := readFrame(r, nil)
			if err != nil {
				return
			}
			if lim, _ := maxBody(ty); len(body) > lim {
				t.Fatalf("%s body of %d bytes passed, limit %d", ty, len(body), lim)
			}
			_ = decodeAny(ty, body)
		}
	})
}

func FuzzDecodeWant(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		cs, err := decodeWant(body)
		if err != nil {
			return
		}
		if len(cs) == 0 || len(cs) > WireMaxWant {
			t.Fatalf("%d CIDs accepted", len(cs))
		}
		if again := appendWant(nil, cs); !bytes.Equal(again, body) {
			t.Fatalf("re-encodes as %x, was %x", again, body)
		}
	})
}

func FuzzDecodeBlock(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		c, data, err := decodeBlock(body)
		if err != nil {
			return
		}
		if again := append(appendCID(nil, c), data...); !bytes.Equal(again, body) {
			t.Fatalf("re-encodes as %x, was %x", again, body)
		}
	})
}

func FuzzDecodeHaveNot(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := decodeHaveNot(body)
		if err != nil {
			return
		}
		if again := appendCID(nil, c); !bytes.Equal(again, body) {
			t.Fatalf("re-encodes as %x, was %x", again, body)
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		code, text, err := decodeError(body)
		if err != nil {
			return
		}
		if again := appendError(nil, code, text); !bytes.Equal(again, body) {
			t.Fatalf("re-encodes as %x, was %x", again, body)
		}
	})
}

func FuzzDecodeReplicate(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := decodeReplicate(body)
		if err != nil {
			return
		}
		if err := checkPin(r.Pin); err != nil {
			t.Fatalf("accepted pin: %v", err)
		}
		if again := appendReplicate(nil, r); !bytes.Equal(again, body) {
			t.Fatalf("re-encodes as %x, was %x", again, body)
		}
	})
}

func FuzzDecodeProgress(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		d, n, err := decodeProgress(body)
		if err != nil {
			return
		}
		if again := appendProgress(nil, d, n); !bytes.Equal(again, body) {
			t.Fatalf("re-encodes as %x, was %x", again, body)
		}
	})
}

func FuzzDecodeUnreplicate(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		pin, err := decodeUnrepl(body)
		if err != nil {
			return
		}
		if err := checkPin(pin); err != nil {
			t.Fatalf("accepted pin: %v", err)
		}
	})
}
