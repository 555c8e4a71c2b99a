package p2p

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	dsq "github.com/ipfs/go-datastore/query"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

var testAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4737"), ma.StringCast("/ip4/127.0.0.1/udp/4737/quic-v1")}

func mustSign(t testing.TB, id *Identity, seq uint64, exp time.Time) *Record {
	t.Helper()
	r, err := signRecord(id, testAddrs, seq, exp)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// resign re-wraps a record body with a new signature by key.
func resign(t testing.TB, body []byte, key crypto.PrivKey) []byte {
	t.Helper()
	sig, err := key.Sign(signedMessage(ctxRecord, body))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := canon.Marshal(&wireRecord{V: RecordVersion, Body: body, Sig: sig})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestValidate(t *testing.T) {
	d, evil := nettest.NewDomain(t), nettest.NewDomain(t)
	good, _ := member(t, d, "laptop")
	now := time.Now()
	exp := now.Add(time.Hour)
	v := NewValidator(caps.NewVerifier(), nil)
	key := RecordKey(good.Path)
	rec := mustSign(t, good, 1, exp)
	got, err := v.Check(key, rec.Marshal())
	if err != nil {
		t.Fatalf("good record: %v", err)
	}
	if got.Path != good.Path || got.Peer != good.Cert.HostID || got.Seq != 1 || !got.Expiry.Equal(exp.Truncate(time.Second)) || len(got.Addrs) != 2 {
		t.Fatalf("decoded %+v", got)
	}
	// Warm: the same bytes again take the cache and still pass.
	if err := v.Validate(key, rec.Marshal()); err != nil {
		t.Fatal(err)
	}

	for _, bad := range badIdentities {
		if bad.nodeOnly {
			continue
		}
		t.Run(bad.name, func(t *testing.T) {
			id := bad.make(t, d, evil, good)
			r := mustSign(t, id, 2, exp)
			err := v.Validate(RecordKey(id.Path), r.Marshal())
			if !isAll(err, ErrBadRecord, bad.want) {
				t.Fatalf("Validate = %v, want %v and %v", err, ErrBadRecord, bad.want)
			}
		})
	}

	body := func(mod func(*recordBody)) []byte {
		b := recordBody{V: RecordVersion, Path: good.Path.String(), Peer: good.Cert.HostID.String(),
			Addrs: [][]byte{testAddrs[0].Bytes()}, HostCert: good.Cert.Marshal(), Writecap: good.Writecap.Marshal(),
			Seq: 3, Expiry: exp.Unix()}
		mod(&b)
		enc, err := canon.Marshal(&b)
		if err != nil {
			t.Fatal(err)
		}
		return enc
	}
	tampered := func() []byte {
		r := mustSign(t, good, 4, exp)
		var w wireRecord
		if err := canon.Unmarshal(r.Marshal(), &w); err != nil {
			t.Fatal(err)
		}
		w.Sig[0] ^= 1
		raw, err := canon.Marshal(&w)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	other := d.Path(t, "desktop")
	for _, tc := range []struct {
		name  string
		key   string
		value []byte
		want  []error
	}{
		{"expired", key, mustSign(t, good, 5, now.Add(-time.Second)).Marshal(), []error{ErrBadRecord, ErrExpired}},
		{"key-for-another-path", RecordKey(other), rec.Marshal(), []error{ErrBadRecord}},
		{"key-outside-namespace", "/pk" + good.Path.String(), rec.Marshal(), []error{ErrBadRecord}},
		{"tampered-signature", key, tampered(), []error{ErrBadRecord, caps.ErrBadSignature}},
		{"signed-by-another-key", key, resign(t, body(func(*recordBody) {}), newHostKey(t)), []error{ErrBadRecord, caps.ErrBadSignature}},
		{"peer-not-the-certified-host", key, resign(t, body(func(b *recordBody) { b.Peer = evil.ID.String() }), good.HostKey), []error{ErrBadRecord, caps.ErrWrongHolder}},
		{"peer-in-cid-form", key, resign(t, body(func(b *recordBody) { b.Peer = "bafzaajaiaejcb" }), good.HostKey), []error{ErrBadRecord, caps.ErrMalformed}},
		{"bad-multiaddr", key, resign(t, body(func(b *recordBody) { b.Addrs = [][]byte{{0xff, 0xff}} }), good.HostKey), []error{ErrBadRecord, caps.ErrMalformed}},
		{"body-version-2", key, resign(t, body(func(b *recordBody) { b.V = 2 }), good.HostKey), []error{ErrBadRecord, caps.ErrUnknownVersion}},
		{"garbage", key, []byte("garbage"), []error{ErrBadRecord, caps.ErrMalformed}},
		{"trailing-byte", key, append(rec.Marshal()[:len(rec.Marshal()):len(rec.Marshal())], 0), []error{ErrBadRecord, caps.ErrMalformed}},
		{"too-big", key, make([]byte, MaxRecordSize+1), []error{ErrBadRecord, caps.ErrMalformed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Validate(tc.key, tc.value)
			if !isAll(err, tc.want...) {
				t.Fatalf("Validate = %v, want all of %v", err, tc.want)
			}
		})
	}

	t.Run("expired-by-clock", func(t *testing.T) {
		later := exp.Add(time.Second)
		lv := NewValidator(caps.NewVerifier(caps.WithClock(func() time.Time { return later })), func() time.Time { return later })
		if err := lv.Validate(key, rec.Marshal()); !isAll(err, ErrBadRecord, ErrExpired) {
			t.Fatalf("got %v", err)
		}
		if e, ok := lv.expiredSince(key, now); !ok || !e.Equal(rec.Expiry) {
			t.Fatalf("expiredSince = %v, %v", e, ok)
		}
	})
}

func TestSelect(t *testing.T) {
	d := nettest.NewDomain(t)
	id, _ := member(t, d, "laptop")
	v := NewValidator(caps.NewVerifier(), nil)
	key := RecordKey(id.Path)
	now := time.Now()
	s1 := mustSign(t, id, 1, now.Add(2*time.Hour)).Marshal()
	s2 := mustSign(t, id, 2, now.Add(time.Hour)).Marshal()
	s2late := mustSign(t, id, 2, now.Add(3*time.Hour)).Marshal()
	for _, tc := range []struct {
		name   string
		values [][]byte
		want   int
	}{
		{"higher-seq-wins", [][]byte{s1, s2}, 1},
		{"higher-seq-wins-first", [][]byte{s2, s1}, 0},
		{"same-seq-later-expiry", [][]byte{s2, s2late}, 1},
		{"same-seq-later-expiry-first", [][]byte{s2late, s2, s1}, 0},
		{"garbage-loses", [][]byte{[]byte("x"), s1}, 1},
		{"identical-first", [][]byte{s1, s1}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Select(key, tc.values)
			if err != nil || got != tc.want {
				t.Fatalf("Select = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
	if _, err := v.Select(key, [][]byte{[]byte("x")}); err == nil {
		t.Fatal("Select of garbage only succeeded")
	}
}

// storedRecord returns the record n's DHT store holds under key.
func storedRecord(t testing.TB, n *Node, key string) (*Record, bool) {
	t.Helper()
	res, err := n.store.Query(context.Background(), dsq.Query{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var r recpb.Record
		if proto.Unmarshal(e.Value, &r) != nil || string(r.GetKey()) != key {
			continue
		}
		rec, err := DecodeRecord(r.GetValue())
		if err != nil {
			t.Fatalf("%s stores an undecodable record under %s: %v", n.Path(), key, err)
		}
		return rec, true
	}
	return nil, false
}

// TestRecordRefusedByDHT: a malicious node whose own DHT accepts anything
// publishes records it may not; every honest server refuses to store them,
// and resolution never returns them.
func TestRecordRefusedByDHT(t *testing.T) {
	d, evil := nettest.NewDomain(t), nettest.NewDomain(t)
	honest := newCluster(t, d, nil, "alpha", "beta", "gamma")
	for _, bad := range badIdentities {
		if bad.nodeOnly {
			continue
		}
		t.Run(bad.name, func(t *testing.T) {
			id := bad.make(t, d, evil, honest[1].id)
			m := startMalicious(t, id, honest[0].AddrInfo())
			nettest.WaitFor(t, 10*time.Second, "a routing table", func() bool { return m.RoutingTableSize() >= len(honest) })
			key := RecordKey(id.Path)
			// Its own DHT accepts anything, so PutValue stores the record
			// locally and sends it to the closest servers, and returns once
			// they have answered.
			rec := mustSign(t, id, uint64(time.Now().UnixNano()), time.Now().Add(time.Hour))
			if err := m.dht.PutValue(nettest.Context(t, 20*time.Second), key, rec.Marshal()); err != nil {
				t.Fatal(err)
			}
			if r, ok := storedRecord(t, m, key); !ok || r.Peer != m.ID() {
				t.Fatalf("the malicious node did not store its own record locally")
			}
			for _, h := range honest {
				if r, ok := storedRecord(t, h, key); ok && r.Peer == m.ID() {
					t.Errorf("%s stored the malicious record", h.Path())
				}
			}
			ctx := nettest.Context(t, 10*time.Second)
			honest[2].Invalidate(id.Path)
			res, err := honest[2].Resolve(ctx, id.Path)
			switch {
			case id.Path == honest[1].Path():
				if err != nil || res.Peer != honest[1].ID() {
					t.Errorf("Resolve(%s) = %+v, %v; want the honest node", id.Path, res, err)
				}
			case bad.want == caps.ErrExpired && errors.Is(err, ErrExpired):
				// The malicious node itself serves the authentic but
				// expired record: that is reported as such.
			case !errors.Is(err, ErrNotFound):
				t.Errorf("Resolve(%s) = %+v, %v; want %v", id.Path, res, err, ErrNotFound)
			}
			if ctx.Err() != nil {
				t.Errorf("resolution took until the deadline")
			}
		})
	}
}

// TestStaleSeqRefused: an older record of a path, validly signed, does not
// replace a newer one, neither locally nor on remote servers.
func TestStaleSeqRefused(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newCluster(t, d, nil, "a", "b", "c")
	a := nodes[0]
	// A permissive node pushes a's stale record to the others.
	pushID, _ := member(t, d, "pusher")
	pusher := startMalicious(t, pushID, a.AddrInfo())
	waitPublished(t, pusher)

	pub := a.Published()
	key := RecordKey(a.Path())
	stale := mustSign(t, a.id, pub.Seq-1, pub.Expiry.Add(time.Hour)) // later expiry, lower seq
	fresh := a.Published().Seq
	if i, err := a.validator.Select(key, [][]byte{stale.Marshal(), mustSign(t, a.id, fresh, pub.Expiry).Marshal()}); err != nil || i != 1 {
		t.Fatalf("Select = %d, %v; want the higher seq", i, err)
	}
	ctx := nettest.Context(t, 20*time.Second)
	if err := a.dht.PutValue(ctx, key, stale.Marshal()); err == nil {
		t.Errorf("local PutValue of a stale record succeeded")
	}
	// A node that a's publication has not reached yet (not among the
	// closest, or still in flight on a slow machine) rightly takes the
	// stale record as its first: only the holders of the fresh one count.
	held := make(map[*Node]bool)
	for _, n := range nodes {
		if r, ok := storedRecord(t, n, key); ok && r.Seq == fresh {
			held[n] = true
		}
	}
	if err := pusher.dht.PutValue(ctx, key, stale.Marshal()); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		r, ok := storedRecord(t, n, key)
		if !ok || !held[n] {
			continue
		}
		if r.Seq != fresh {
			t.Errorf("%s stores seq %d, want %d", n.Path(), r.Seq, fresh)
		}
	}
	nodes[2].Invalidate(a.Path())
	res, err := nodes[2].Resolve(ctx, a.Path())
	if err != nil || res.Seq != fresh {
		t.Fatalf("Resolve = %+v, %v; want seq %d", res, err, fresh)
	}
}

// Frozen example data: a record and a proof made from fixed keys and
// times. Every build must still read and accept them.
var (
	update   = flag.Bool("update", false, "rewrite testdata/ frozen examples")
	frozenT0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
)

func frozenIdentity(t testing.TB) *Identity {
	t.Helper()
	seed := func(b byte) []byte {
		s := make([]byte, 32)
		for i := range s {
			s[i] = b
		}
		return s
	}
	root, err := softkey.FromSeed(seed(1))
	if err != nil {
		t.Fatal(err)
	}
	node, err := softkey.FromSeed(seed(2))
	if err != nil {
		t.Fatal(err)
	}
	hk, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed(3)))
	if err != nil {
		t.Fatal(err)
	}
	rid := nettest.PrincipalID(t, root.PublicKey())
	p, err := paths.New(rid, "laptop")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, err := caps.Issue(ctx, root, nil, nettest.PrincipalID(t, node.PublicKey()), p, frozenT0.Add(-time.Hour), frozenT0.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c, err := caps.IssueHostCert(ctx, node, hk.GetPublic(), frozenT0.Add(-time.Hour), frozenT0.Add(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &Identity{HostKey: hk, Cert: c, Writecap: w, Path: p}
}

func TestFrozenExamples(t *testing.T) {
	id := frozenIdentity(t)
	rec := mustSign(t, id, uint64(frozenT0.UnixNano()), frozenT0.Add(time.Hour))
	proof, err := encodeProof(id)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"record-v1.cbor": rec.Marshal(), "proof-v1.cbor": proof}
	if *update {
		for name, b := range files {
			if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	clock := func() time.Time { return frozenT0 }
	v := caps.NewVerifier(caps.WithClock(clock))

	raw, err := os.ReadFile(filepath.Join("testdata", "record-v1.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewValidator(v, clock).Check(RecordKey(id.Path), raw)
	if err != nil {
		t.Fatalf("frozen record: %v", err)
	}
	if got.Path != id.Path || got.Peer != id.Cert.HostID || got.Seq != uint64(frozenT0.UnixNano()) || len(got.Addrs) != 2 {
		t.Errorf("frozen record decodes to %+v", got)
	}
	if string(raw) != string(files["record-v1.cbor"]) {
		t.Errorf("this build encodes the frozen record differently")
	}

	raw, err = os.ReadFile(filepath.Join("testdata", "proof-v1.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := verifyProof(newCertCache(), v, id.HostKey.GetPublic(), raw, frozenT0)
	if err != nil || p != id.Path {
		t.Fatalf("frozen proof: %s, %v", p, err)
	}
	if string(raw) != string(proof) {
		t.Errorf("this build encodes the frozen proof differently")
	}
}
