package host

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

// Fuzz targets for the host's index decoders; seeds under
// testdata/fuzz/<Name>/ (BT_WRITE_FUZZ_SEEDS=1 rewrites them).

func logSeeds() [][]byte {
	var k fsys.RecordKey
	k.Ino, k.Name[0] = 5, 1
	return [][]byte{
		encodeLog(&logEntry{time: 1700000000, writer: "/12D3KooWxyz/laptop", op: "create", keys: []fsys.RecordKey{{Ino: 5}, k}}),
		encodeLog(&logEntry{}),
	}
}

func metaSeeds() [][]byte {
	return [][]byte{encodeMeta(42, 7, paths.MustParse("/12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf/data"))}
}

func FuzzDecodeLog(f *testing.F) {
	for _, s := range logSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeLog(b)
		if err != nil {
			return
		}
		if again := encodeLog(e); !bytes.Equal(again, b) {
			t.Fatal("re-encoding differs")
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	for _, s := range metaSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeMeta(b)
	})
}

func FuzzParseRecKey(f *testing.F) {
	f.Add(recKey(fsys.RecordKey{Ino: 3}, 9))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, v, ok := parseRecKey(b)
		if ok && !bytes.Equal(recKey(k, v), b) {
			t.Fatal("re-encoding differs")
		}
	})
}

func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BT_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set BT_WRITE_FUZZ_SEEDS=1 to rewrite the seed corpora")
	}
	write := func(name string, seeds [][]byte) {
		dir := filepath.Join("testdata", "fuzz", name)
		os.MkdirAll(dir, 0o755)
		for i, s := range seeds {
			os.WriteFile(filepath.Join(dir, "seed"+strconv.Itoa(i)), []byte("go test fuzz v1\n[]byte("+strconv.Quote(string(s))+")\n"), 0o644)
		}
	}
	write("FuzzDecodeLog", logSeeds())
	write("FuzzDecodeMeta", metaSeeds())
	write("FuzzParseRecKey", [][]byte{recKey(fsys.RecordKey{Ino: 3}, 9)})
}
