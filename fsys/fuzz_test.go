package fsys

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Native fuzz targets for every decoder; seeds are committed under
// testdata/fuzz/<Name>/ (regenerate with BT_WRITE_FUZZ_SEEDS=1 go test -run
// TestWriteFuzzSeeds).

func FuzzUnmarshalTx(f *testing.F) {
	for _, s := range txSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tx, err := UnmarshalTx(b)
		if err != nil {
			return
		}
		again, err := MarshalTx(tx)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %v", err)
		}
	})
}

func FuzzUnmarshalRecord(f *testing.F) {
	for _, s := range recordSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := UnmarshalRecord(b)
		if err != nil {
			return
		}
		again, err := MarshalRecord(&r)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %v", err)
		}
	})
}

func recordSeeds() [][]byte {
	c, _ := cidOf([]byte("y"))
	var k RecordKey
	k.Ino = 9
	k.Name[0] = 1
	var out [][]byte
	for _, r := range []Record{{Key: RecordKey{Ino: 9}, Parent: 1, Version: 3, Sealed: []byte{1, 2}, Blocks: nil}, {Key: k, Version: 4, Sealed: []byte{3}}} {
		b, _ := MarshalRecord(&r)
		out = append(out, b)
	}
	_ = c
	return out
}

func txSeeds(t testing.TB) [][]byte {
	data, err := os.ReadFile(filepath.Join("testdata", "tx-v1.cbor"))
	if err != nil {
		return nil
	}
	return [][]byte{data}
}

// TestFrozenTx decodes the frozen example Tx (format version 1) and checks
// its signature, so that every build still reads what was signed before.
func TestFrozenTx(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "tx-v1.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := UnmarshalTx(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyTxSig(tx, tx.HostCert.NotBefore.Add(1)); err != nil {
		t.Fatal(err)
	}
	again, _ := MarshalTx(tx)
	if !bytes.Equal(again, data) {
		t.Fatal("re-encoding differs")
	}
}

func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("BT_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set BT_WRITE_FUZZ_SEEDS=1 to rewrite the seed corpora")
	}
	write := func(name string, seeds [][]byte) {
		dir := filepath.Join("testdata", "fuzz", name)
		os.MkdirAll(dir, 0o755)
		for i, s := range seeds {
			var buf bytes.Buffer
			buf.WriteString("go test fuzz v1\n[]byte(")
			buf.WriteString(quoteBytes(s))
			buf.WriteString(")\n")
			os.WriteFile(filepath.Join(dir, "seed"+string(rune('0'+i))), buf.Bytes(), 0o644)
		}
	}
	write("FuzzUnmarshalRecord", recordSeeds())
	write("FuzzUnmarshalTx", txSeeds(t))
}
