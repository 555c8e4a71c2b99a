package remote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

func testCID(t testing.TB, s string) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte(s), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// testTx is a Tx with every field set, in the zone UTC+2.
func testTx(t testing.TB) *fsys.Tx {
	t.Helper()
	d := nettest.NewDomain(t)
	nk := nettest.NewKey(t)
	w := d.GrantDay(t, nettest.PrincipalID(t, nk.PublicKey()), d.Path(t))
	hc, err := caps.IssueHostCert(context.Background(), nk, nettest.NewKey(t).PublicKey(), time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var name [32]byte
	name[3] = 9
	return &fsys.Tx{
		Volume: d.Path(t),
		Base:   []fsys.Base{{Key: fsys.RecordKey{Ino: 1}}, {Key: fsys.RecordKey{Ino: 2, Name: name}, Version: 7}},
		Put: []fsys.Record{
			{Key: fsys.RecordKey{Ino: 1}, Sealed: []byte("root"), Grant: d.Path(t)},
			{Key: fsys.RecordKey{Ino: 2, Name: name}, Sealed: []byte{}, Blocks: []cid.Cid{testCID(t, "a"), testCID(t, "b")}},
			{Key: fsys.RecordKey{Ino: 3}, Parent: 1, Blocks: []cid.Cid{}},
		},
		Delete:        []fsys.RecordKey{{Ino: 4}},
		Readcaps:      []fsys.Readcap{{Ino: 1, Reader: d.ID, Cap: []byte("cap")}},
		RevokeReaders: []fsys.Readcap{},
		Op:            "write",
		Time:          time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("", 7200)),
		Writecap:      w,
		HostCert:      hc,
		Sig:           []byte("sig"),
	}
}

// roundTrip sends q (and tx's records) through the wire encodings.
func roundTrip(t *testing.T, tx *fsys.Tx) *fsys.Tx {
	t.Helper()
	b, err := encodeRequest(&request{Op: opCommit, Vol: tx.Volume, Tx: tx})
	if err != nil {
		t.Fatal(err)
	}
	q, err := decodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	frames, err := recordFrames(tx.Put)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, f := range frames {
		if err := writeFrame(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{}
	if err := s.readTx(bufio.NewReader(&buf), q); err != nil {
		t.Fatal(err)
	}
	return q.Tx
}

func TestTxRoundTrip(t *testing.T) {
	tx := testTx(t)
	got := roundTrip(t, tx)
	// Writecap and HostCert compare by encoding.
	if !bytes.Equal(got.Writecap.Marshal(), tx.Writecap.Marshal()) || !bytes.Equal(got.HostCert.Marshal(), tx.HostCert.Marshal()) {
		t.Fatal("writecap or host certificate changed")
	}
	got.Writecap, got.HostCert = tx.Writecap, tx.HostCert
	if got.Time.Format(time.RFC3339Nano) != tx.Time.Format(time.RFC3339Nano) || !got.Time.Equal(tx.Time) {
		t.Fatalf("time %v, want %v", got.Time, tx.Time)
	}
	got.Time = tx.Time
	if !reflect.DeepEqual(got, tx) {
		t.Fatalf("round trip changed the Tx:\n got %#v\nwant %#v", got, tx)
	}
	// The Tx's signing bytes, which the host checks, are unchanged.
	a, err1 := fsys.TxSigningBytes(tx)
	b, err2 := fsys.TxSigningBytes(got)
	if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
		t.Fatalf("signing bytes differ (%v, %v)", err1, err2)
	}
	// Nil and empty Put survive as such.
	for _, put := range [][]fsys.Record{nil, {}} {
		tx.Put = put
		if got := roundTrip(t, tx); (got.Put == nil) != (put == nil) || len(got.Put) != 0 {
			t.Fatalf("Put %#v came back as %#v", put, got.Put)
		}
	}
}

func TestErrorKinds(t *testing.T) {
	for k, s := range kindSentinels {
		err := kindErr(k, "because")
		if !errors.Is(err, s) {
			t.Errorf("kind %d: %v is not %v", k, err, s)
		}
		if k <= kindIntegrity && errKind(fmt.Errorf("wrapped: %w", s)) != k {
			t.Errorf("sentinel %v: kind %d, want %d", s, errKind(s), k)
		}
	}
	if !errors.Is(kindErr(200, "x"), fsys.ErrUnavailable) {
		t.Error("an unknown kind is not ErrUnavailable")
	}
}

func TestDecodeRefuses(t *testing.T) {
	d := nettest.NewDomain(t)
	vol := d.Path(t)
	ok, err := encodeRequest(&request{Op: opInfo, Vol: vol})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeRequest(ok); err != nil {
		t.Fatal(err)
	}
	cases := map[string]*wireRequest{
		"version":     {V: 2, Op: opInfo, Vol: vol.String()},
		"op":          {V: 1, Op: 99, Vol: vol.String()},
		"vol":         {V: 1, Op: opInfo, Vol: "/"},
		"get-no-keys": {V: 1, Op: opGet, Vol: vol.String()},
		"keys":        {V: 1, Op: opGet, Vol: vol.String(), Keys: []byte{1, 2, 3}},
		"zero-ino":    {V: 1, Op: opGet, Vol: vol.String(), Keys: make([]byte, keySize)},
		"log-limit":   {V: 1, Op: opLog, Vol: vol.String(), Keys: encKeys([]fsys.RecordKey{{Ino: 1}}), Limit: MaxLog + 1},
		"commit":      {V: 1, Op: opCommit, Vol: vol.String()},
		"tx-on-info":  {V: 1, Op: opInfo, Vol: vol.String(), Tx: &wireTx{Volume: vol.String()}},
		"readcaps":    {V: 1, Op: opReadcaps, Vol: vol.String()},
		"sync-no-ver": {V: 1, Op: opSync, Vol: vol.String()},
		"sync-keys":   {V: 1, Op: opSync, Vol: vol.String(), At: 3, Keys: encKeys([]fsys.RecordKey{{Ino: 1}})},
		"nosync-info": {V: 1, Op: opInfo, Vol: vol.String(), NoSync: true},
	}
	for name, w := range cases {
		t.Run(name, func(t *testing.T) {
			b, err := encodeCanon(w)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeRequest(b); !errors.Is(err, errProtocol) {
				t.Fatalf("decoded: %v", err)
			}
		})
	}
}

// Seeds for the fuzz targets; `BT_WRITE_SEEDS=1 go test -run TestWriteSeeds`
// rewrites testdata/fuzz from them.
func seeds(t testing.TB) map[string][][]byte {
	tx := testTx(t)
	commit, _ := encodeRequest(&request{Op: opCommit, Vol: tx.Volume, Tx: tx})
	info, _ := encodeRequest(&request{Op: opInfo, Vol: tx.Volume})
	get, _ := encodeRequest(&request{Op: opGet, Vol: tx.Volume, At: 3, Keys: []fsys.RecordKey{{Ino: 1}, {Ino: 2, Name: [32]byte{1}}}})
	logq, _ := encodeRequest(&request{Op: opLog, Vol: tx.Volume, Keys: []fsys.RecordKey{{Ino: 1}}, Limit: 5})
	commitNoSync, _ := encodeRequest(&request{Op: opCommit, Vol: tx.Volume, Tx: tx, NoSync: true})
	syncq, _ := encodeRequest(&request{Op: opSync, Vol: tx.Volume, At: 7})
	recs, _ := recordFrames(tx.Put)
	var ws []wireRecord
	_ = batch(tx.Put, func(b []wireRecord) error { ws = append(ws, b...); return nil })
	resp1, _ := encodeResponse(&wireResponse{Recs: ws, More: true})
	resp2, _ := encodeResponse(&wireResponse{Kind: kindConflict, Msg: "stale"})
	resp3, _ := encodeResponse(&wireResponse{Info: &wireInfo{Path: tx.Volume.String(), Root: 1, Version: 2, Host: tx.Volume.String() + "/n0", Hostcap: tx.Writecap.Marshal()}})
	resp4, _ := encodeResponse(&wireResponse{Change: &wireChange{Version: 3, Keys: encKeys([]fsys.RecordKey{{Ino: 5}})}})
	resp5, _ := encodeResponse(&wireResponse{Log: encodeLog([]fsys.LogEntry{{Version: 1, Time: tx.Time, Writer: tx.Volume, Op: "x"}})})
	var frame bytes.Buffer
	_ = writeFrame(&frame, info)
	return map[string][][]byte{
		"FuzzDecodeRequest":      {commit, info, get, logq, commitNoSync, syncq},
		"FuzzDecodeResponse":     {resp1, resp2, resp3, resp4, resp5},
		"FuzzDecodeRecordsFrame": recs,
		"FuzzReadFrame":          {frame.Bytes(), {0x80, 0x80, 0x80, 0x80, 0x01}},
	}
}

func TestWriteSeeds(t *testing.T) {
	if os.Getenv("BT_WRITE_SEEDS") == "" {
		t.Skip("set BT_WRITE_SEEDS=1 to rewrite testdata/fuzz")
	}
	for name, ss := range seeds(t) {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range ss {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// FuzzDecodeRequest: any input is refused with an error or decodes to a
// request that re-encodes and decodes to the same.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range seeds(f)["FuzzDecodeRequest"] {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := decodeRequest(b)
		if err != nil {
			return
		}
		if q.Vol.IsZero() {
			t.Fatal("decoded a request without a volume")
		}
		again, err := encodeRequest(q)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := decodeRequest(again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

// FuzzDecodeResponse: any response is refused or decodes with its records,
// info, log and change keys checked without a panic.
func FuzzDecodeResponse(f *testing.F) {
	for _, s := range seeds(f)["FuzzDecodeResponse"] {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeResponse(b)
		if err != nil {
			return
		}
		_, _ = decodeRecords(r.Recs)
		_, _ = decReadcaps(r.Caps)
		_, _ = decodeLog(r.Log)
		if r.Info != nil {
			_, _, _ = decodeInfo(r.Info)
		}
		if r.Change != nil {
			_, _ = decKeys(r.Change.Keys, "change")
		}
		_ = kindErr(r.Kind, r.Msg)
	})
}

// FuzzDecodeRecordsFrame: a frame of Commit records is refused or decodes
// to records that re-encode to the same frame.
func FuzzDecodeRecordsFrame(f *testing.F) {
	for _, s := range seeds(f)["FuzzDecodeRecordsFrame"] {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := decodeRecordsFrame(b)
		if err != nil {
			return
		}
		frames, err := recordFrames(recs)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if len(frames) != 1 || !bytes.Equal(frames[0], b) {
			t.Fatalf("records re-encode differently")
		}
	})
}

// FuzzReadFrame: a frame reader never reads past its bound or panics.
func FuzzReadFrame(f *testing.F) {
	for _, s := range seeds(f)["FuzzReadFrame"] {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := readFrame(bufio.NewReader(bytes.NewReader(b)), 4096)
		if err == nil && (len(got) == 0 || len(got) > 4096) {
			t.Fatalf("frame of %d bytes", len(got))
		}
	})
}

var _ = paths.Path{}
