package fsys_test

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/nettest"
)

// TestWriteFrozenTx writes testdata/tx-v1.cbor, the frozen example Tx that
// TestFrozenTx reads (only with BT_WRITE_FUZZ_SEEDS=1).
func TestWriteFrozenTx(t *testing.T) {
	if os.Getenv("BT_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set BT_WRITE_FUZZ_SEEDS=1 to rewrite the frozen Tx")
	}
	d := nettest.NewDomain(t)
	key, _, wc := d.Member(t, "laptop")
	vol := d.Path(t, "laptop")
	hk, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	now := time.Now()
	cert, err := caps.IssueHostCert(context.Background(), key, hk.GetPublic(), now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := blocks.NewBlock([]byte("block"))
	var ek fsys.RecordKey
	ek.Ino, ek.Name[0] = 1, 7
	rc, err := caps.WrapKey(d.Root.PublicKey(), make([]byte, 32), "p")
	if err != nil {
		t.Fatal(err)
	}
	tx := &fsys.Tx{Volume: vol, Op: "create", Time: now, Writecap: wc, HostCert: cert,
		Base:          []fsys.Base{{Key: fsys.RecordKey{Ino: 2}}, {Key: ek, Version: 3}},
		Put:           []fsys.Record{{Key: fsys.RecordKey{Ino: 2}, Parent: 1, Sealed: []byte("sealed"), Blocks: []cid.Cid{b.CID}, Grant: vol}},
		Delete:        []fsys.RecordKey{ek},
		Readcaps:      []fsys.Readcap{{Ino: 2, Reader: d.ID, Cap: rc.Marshal()}},
		RevokeReaders: []fsys.Readcap{{Ino: 2, Reader: d.ID}}}
	if err := fsys.SignTx(tx, hk); err != nil {
		t.Fatal(err)
	}
	data, err := fsys.MarshalTx(tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "tx-v1.cbor"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}
