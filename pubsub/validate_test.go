package pubsub

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	gossip "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/softkey"
)

// frozenNow is the clock of the frozen examples.
var frozenNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// newChecker returns a PubSub with only what the validator needs, on a
// fixed clock: no node, no network.
func newChecker(t testing.TB, now time.Time) *PubSub {
	t.Helper()
	cfg := Config{Clock: func() time.Time { return now }}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	certs, _ := lru.New[[sha256.Size]byte, *caps.HostCert](certCacheSize)
	return &PubSub{cfg: cfg, verifier: cfg.Verifier, certs: certs, log: cfg.Log}
}

// validEnvelope is a plain message from n's identity to topic.
func validEnvelope(t testing.TB, n *testNode, topic paths.Path) *envelope {
	t.Helper()
	return &envelope{topic: topic, seq: 1, from: n.path(), hostCert: n.id.Cert.Marshal(), nodeCap: n.id.Writecap.Marshal(), data: []byte("hi")}
}

func seedKey(t testing.TB, b byte) *softkey.Key {
	t.Helper()
	k, err := softkey.FromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func seedHostKey(t testing.TB, b byte) crypto.PrivKey {
	t.Helper()
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fixture is a publisher made of fixed keys: root, node, host key, and a
// reader, with certificates and writecaps valid around frozenNow.
type fixture struct {
	root, node, reader *softkey.Key
	host               crypto.PrivKey
	hostID             peer.ID
	rootID             paths.ID
	path               paths.Path // the node path
	cert               *caps.HostCert
	nodeCap            *caps.Writecap
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	fx := &fixture{root: seedKey(t, 1), node: seedKey(t, 2), reader: seedKey(t, 4), host: seedHostKey(t, 3)}
	fx.rootID = nettest.PrincipalID(t, fx.root.PublicKey())
	fx.hostID, _ = peer.IDFromPrivateKey(fx.host)
	fx.path = fx.p(t, "node")
	fx.nodeCap = fx.issue(t, fx.node, fx.path, frozenNow.Add(-time.Hour), frozenNow.AddDate(1, 0, 0))
	fx.cert = fx.hostCert(t, fx.host.GetPublic(), frozenNow.Add(-time.Hour), frozenNow.AddDate(1, 0, 0))
	return fx
}

func (fx *fixture) p(t testing.TB, comps ...string) paths.Path {
	t.Helper()
	p, err := paths.New(fx.rootID, comps...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (fx *fixture) issue(t testing.TB, holder caps.Signer, prefix paths.Path, nbf, exp time.Time) *caps.Writecap {
	t.Helper()
	w, err := caps.Issue(context.Background(), fx.root, nil, nettest.PrincipalID(t, holder.PublicKey()), prefix, nbf, exp)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (fx *fixture) hostCert(t testing.TB, host crypto.PubKey, nbf, exp time.Time) *caps.HostCert {
	t.Helper()
	c, err := caps.IssueHostCert(context.Background(), fx.node, host, nbf, exp)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (fx *fixture) envelope(topic paths.Path) *envelope {
	return &envelope{topic: topic, seq: 42, from: fx.path, hostCert: fx.cert.Marshal(), nodeCap: fx.nodeCap.Marshal(), data: []byte("frozen")}
}

// mustEncode signs e with the fixture's host key and encodes it.
func (fx *fixture) mustEncode(t testing.TB, e *envelope) []byte {
	t.Helper()
	return mustSign(t, fx.host, e)
}

func mustSign(t testing.TB, host crypto.PrivKey, e *envelope) []byte {
	t.Helper()
	b, err := e.sign(host)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustEncodeV1 encodes e as a version 1 message (no signature of its own).
func mustEncodeV1(t testing.TB, e *envelope) []byte {
	t.Helper()
	b, err := e.body(1)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheck runs the validator on messages that break one rule each.
func TestCheck(t *testing.T) {
	fx := newFixture(t)
	topic := fx.p(t, "node", "sensors", "temp")
	other := seedKey(t, 9)
	evil := seedKey(t, 8)
	otherHost := seedHostKey(t, 7)
	cases := []struct {
		name    string
		topic   string         // gossipsub topic; default topic's exact one
		signer  crypto.PrivKey // default the fixture's host key
		edit    func(e *envelope)
		raw     []byte // instead of the envelope
		want    error  // nil: accepted
		ignored bool   // refused without penalty
	}{
		{name: "valid"},
		{name: "valid-on-subtree-of-root", topic: subtreeTopic(fx.p(t))},
		{name: "valid-on-subtree-of-node", topic: subtreeTopic(fx.path)},
		{name: "subtree-below-node-path", topic: subtreeTopic(fx.p(t, "node", "sensors")), want: caps.ErrPathNotCovered},
		{name: "own-subtree-below-node-path", topic: subtreeTopic(topic), want: caps.ErrPathNotCovered},
		{name: "valid-empty-payload", edit: func(e *envelope) { e.data = nil }},
		{name: "topic-not-carried", topic: exactTopic(fx.p(t, "node", "sensors")), want: caps.ErrPathNotCovered},
		{name: "subtree-of-sibling", topic: subtreeTopic(fx.p(t, "node", "other")), want: caps.ErrPathNotCovered},
		{name: "foreign-gossipsub-topic", topic: "chat", want: caps.ErrPathNotCovered},
		{name: "signed-by-another-host", signer: otherHost, want: caps.ErrBadSignature},
		{name: "signature-of-another-message", raw: func() []byte {
			a, b := fx.envelope(topic), fx.envelope(topic)
			b.seq++
			fx.mustEncode(t, a)
			fx.mustEncode(t, b)
			b.sig = a.sig
			data, err := b.encode()
			if err != nil {
				t.Fatal(err)
			}
			return data
		}(), want: caps.ErrBadSignature},
		{name: "version-1", raw: mustEncodeV1(t, fx.envelope(topic)), want: caps.ErrUnknownVersion},
		{name: "from-another-node-path", edit: func(e *envelope) { e.from = fx.p(t, "other") }, want: caps.ErrPathNotCovered},
		{name: "from-not-a-node-path", edit: func(e *envelope) { e.from = fx.p(t, "node", "x") }, want: caps.ErrMalformed},
		{name: "topic-outside-writecap", topic: exactTopic(fx.p(t, "other", "x")), edit: func(e *envelope) { e.topic = fx.p(t, "other", "x") }, want: caps.ErrPathNotCovered},
		{name: "topic-cap-held-by-another", topic: exactTopic(fx.p(t, "shared")), edit: func(e *envelope) {
			e.topic = fx.p(t, "shared")
			e.cap = fx.issue(t, other, fx.p(t, "shared"), frozenNow.Add(-time.Hour), frozenNow.Add(time.Hour)).Marshal()
		}, want: caps.ErrWrongHolder},
		{name: "topic-cap-granted", topic: exactTopic(fx.p(t, "shared")), edit: func(e *envelope) {
			e.topic = fx.p(t, "shared")
			e.cap = fx.issue(t, fx.node, fx.p(t, "shared"), frozenNow.Add(-time.Hour), frozenNow.Add(time.Hour)).Marshal()
		}},
		{name: "node-cap-from-another-root", edit: func(e *envelope) {
			now := frozenNow
			w, err := caps.Issue(context.Background(), evil, nil, nettest.PrincipalID(t, fx.node.PublicKey()),
				mustPath(t, nettest.PrincipalID(t, evil.PublicKey()), "node"), now.Add(-time.Hour), now.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			e.nodeCap = w.Marshal()
		}, want: caps.ErrRootMismatch},
		{name: "node-cap-held-by-another", edit: func(e *envelope) {
			e.nodeCap = fx.issue(t, other, fx.path, frozenNow.Add(-time.Hour), frozenNow.Add(time.Hour)).Marshal()
		}, want: caps.ErrWrongHolder},
		{name: "node-cap-expired", edit: func(e *envelope) {
			e.nodeCap = fx.issue(t, fx.node, fx.path, frozenNow.Add(-2*time.Hour), frozenNow.Add(-time.Hour)).Marshal()
		}, want: caps.ErrExpired},
		{name: "node-cap-expired-within-skew", edit: func(e *envelope) {
			e.nodeCap = fx.issue(t, fx.node, fx.path, frozenNow.Add(-2*time.Hour), frozenNow.Add(-time.Minute)).Marshal()
		}, want: caps.ErrExpired, ignored: true},
		{name: "node-cap-not-yet-valid", edit: func(e *envelope) {
			e.nodeCap = fx.issue(t, fx.node, fx.path, frozenNow.Add(time.Hour), frozenNow.Add(2*time.Hour)).Marshal()
		}, want: caps.ErrNotYetValid},
		{name: "host-cert-expired", edit: func(e *envelope) {
			e.hostCert = fx.hostCert(t, fx.host.GetPublic(), frozenNow.Add(-2*time.Hour), frozenNow.Add(-time.Hour)).Marshal()
		}, want: caps.ErrExpired},
		{name: "host-cert-not-yet-valid-within-skew", edit: func(e *envelope) {
			e.hostCert = fx.hostCert(t, fx.host.GetPublic(), frozenNow.Add(time.Minute), frozenNow.Add(time.Hour)).Marshal()
		}, want: caps.ErrNotYetValid, ignored: true},
		{name: "host-cert-by-another-node-key", edit: func(e *envelope) {
			c, err := caps.IssueHostCert(context.Background(), other, fx.host.GetPublic(), frozenNow.Add(-time.Hour), frozenNow.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			e.hostCert = c.Marshal()
		}, want: caps.ErrWrongHolder},
		{name: "host-cert-garbage", edit: func(e *envelope) { e.hostCert = []byte("garbage") }, want: caps.ErrMalformed},
		{name: "host-cert-version-0", edit: func(e *envelope) { e.hostCert = []byte{0xa0} }, want: caps.ErrUnknownVersion},
		{name: "version-0", raw: []byte{0xa1, 0x61, 'v', 0x00}, want: caps.ErrUnknownVersion},
		{name: "sealed-bad-key-id", edit: func(e *envelope) {
			e.data, e.sealed = nil, &wireSealed{KeyID: make([]byte, 8), CT: make([]byte, 16)}
		}, want: caps.ErrMalformed},
		{name: "sealed-and-data", edit: func(e *envelope) {
			e.sealed = &wireSealed{KeyID: make([]byte, KeyIDSize), CT: make([]byte, 16)}
		}, want: caps.ErrMalformed},
		{name: "sealed-too-many-readcaps", edit: func(e *envelope) {
			e.data, e.sealed = nil, &wireSealed{KeyID: make([]byte, KeyIDSize), CT: make([]byte, 16), Readcaps: make([][]byte, MaxReaders+1)}
		}, want: caps.ErrMalformed},
		{name: "sealed-short-ciphertext", edit: func(e *envelope) {
			e.data, e.sealed = nil, &wireSealed{KeyID: make([]byte, KeyIDSize), CT: make([]byte, 15)}
		}, want: caps.ErrMalformed},
		{name: "version-3", raw: func() []byte {
			b, _ := canon.Marshal(map[string]any{"v": 3, "topic": topic.String()})
			return b
		}(), want: caps.ErrUnknownVersion, ignored: true},
		{name: "body-of-another-version", raw: func() []byte {
			body := mustEncodeV1(t, fx.envelope(topic))
			b, _ := canon.Marshal(&wireSigned{V: WireVersion, Body: body, Sig: make([]byte, 64)})
			return b
		}(), want: caps.ErrMalformed},
		{name: "no-signature", raw: func() []byte {
			body, _ := fx.envelope(topic).body(WireVersion)
			b, _ := canon.Marshal(&wireSigned{V: WireVersion, Body: body})
			return b
		}(), want: caps.ErrMalformed},
		{name: "garbage", raw: []byte("garbage"), want: caps.ErrMalformed},
		{name: "empty", raw: []byte{}, want: caps.ErrMalformed},
		{name: "trailing-byte", raw: append(fx.mustEncode(t, fx.envelope(topic)), 0), want: caps.ErrMalformed},
		{name: "oversized", raw: make([]byte, DefaultMaxMessage+1), want: ErrTooLarge},
	}
	ps := newChecker(t, frozenNow)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := fx.envelope(topic)
			if c.edit != nil {
				c.edit(e)
			}
			data := c.raw
			if data == nil {
				signer := c.signer
				if signer == nil {
					signer = fx.host
				}
				data = mustSign(t, signer, e)
			}
			name := c.topic
			if name == "" {
				name = exactTopic(topic)
			}
			in, _, err := ps.check(name, data)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if in.from != fx.path || in.publisher != fx.hostID || in.node != nettest.PrincipalID(t, fx.node.PublicKey()) {
					t.Fatalf("accepted as %+v", in)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if ignorable(err) != c.ignored {
				t.Fatalf("%v: ignorable %v, want %v", err, ignorable(err), c.ignored)
			}
		})
	}
}

func mustPath(t testing.TB, root paths.ID, comps ...string) paths.Path {
	t.Helper()
	p, err := paths.New(root, comps...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The frozen examples: a plain and a confidential message of each format
// version, made from the fixture's fixed keys at frozenNow. Every build
// must still read them, and accept those of WireVersion; version 1
// messages are read and refused (their signature was gossipsub's, outside
// the data). BT_WRITE_FROZEN=1 writes the current version's (only ever for
// a new format version).
const (
	frozenPlainV1  = "testdata/message-v1.cbor"
	frozenSealedV1 = "testdata/message-sealed-v1.cbor"
	frozenPlain    = "testdata/message-v2.cbor"
	frozenSealed   = "testdata/message-sealed-v2.cbor"
)

func TestFrozenMessages(t *testing.T) {
	fx := newFixture(t)
	topic := fx.p(t, "node", "sensors", "temp")
	plain := fx.mustEncode(t, fx.envelope(topic))
	if os.Getenv("BT_WRITE_FROZEN") == "1" {
		e := fx.envelope(topic)
		s := newSealer(newOpener(nettest.PrincipalID(t, fx.node.PublicKey()), nil, nil))
		var err error
		if e.sealed, err = s.seal(topic, e.seq, []byte("frozen secret"), []crypto.PubKey{fx.reader.PublicKey()}); err != nil {
			t.Fatal(err)
		}
		e.data = nil
		if err := os.WriteFile(frozenPlain, plain, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(frozenSealed, fx.mustEncode(t, e), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ps := newChecker(t, frozenNow)
	read := func(name string) []byte {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	got := read(frozenPlain)
	if !bytes.Equal(got, plain) {
		t.Fatal("this build encodes the frozen plain message differently")
	}
	in, _, err := ps.check(exactTopic(topic), got)
	if err != nil {
		t.Fatal(err)
	}
	if in.topic != topic || in.from != fx.path || in.seq != 42 || string(in.data) != "frozen" || in.publisher != fx.hostID {
		t.Fatalf("frozen plain message read as %+v", in.envelope)
	}
	in, _, err = ps.check(subtreeTopic(fx.path), read(frozenSealed))
	if err != nil {
		t.Fatal(err)
	}
	o := newOpener(nettest.PrincipalID(t, fx.reader.PublicKey()), fx.reader.ECDH, newChecker(t, frozenNow).log)
	pt, ok := o.open(context.Background(), in)
	if !ok || string(pt) != "frozen secret" {
		t.Fatalf("frozen sealed message opened to %q, %v", pt, ok)
	}
	nobody := newOpener(nettest.PrincipalID(t, fx.root.PublicKey()), fx.root.ECDH, ps.log)
	if _, ok := nobody.open(context.Background(), in); ok {
		t.Fatal("a non-reader opened the frozen sealed message")
	}

	// Version 1: read, encoded the same, refused.
	v1 := read(frozenPlainV1)
	if !bytes.Equal(v1, mustEncodeV1(t, fx.envelope(topic))) {
		t.Fatal("this build encodes the frozen version 1 plain message differently")
	}
	for _, name := range []string{frozenPlainV1, frozenSealedV1} {
		data := read(name)
		env, err := decodeMessage(data, DefaultMaxMessage)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if env.version != 1 || env.topic != topic || env.from != fx.path || env.seq != 42 {
			t.Fatalf("%s read as %+v", name, env)
		}
		if _, _, err := ps.check(exactTopic(topic), data); !errors.Is(err, caps.ErrUnknownVersion) || ignorable(err) {
			t.Fatalf("%s: check: %v, want a penalised ErrUnknownVersion", name, err)
		}
	}
}

// TestSealedHidesPayload: the encoding of a confidential message contains
// neither the payload nor the topic key.
func TestSealedHidesPayload(t *testing.T) {
	fx := newFixture(t)
	topic := fx.p(t, "node", "x")
	o := newOpener(nettest.PrincipalID(t, fx.node.PublicKey()), nil, newChecker(t, frozenNow).log)
	s := newSealer(o)
	payload := bytes.Repeat([]byte("secret!"), 20)
	sealed, err := s.seal(topic, 7, payload, []crypto.PubKey{fx.reader.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	e := fx.envelope(topic)
	e.seq, e.data, e.sealed = 7, nil, sealed
	data := fx.mustEncode(t, e)
	if bytes.Contains(data, []byte("secret!")) {
		t.Fatal("plaintext in the encoding")
	}
	k := s.keys[topic]
	if k == nil || !bytes.Equal(k.kid, sealed.KeyID) {
		t.Fatal("no key kept for the topic")
	}
	// Same readers: same key; other readers: a new one.
	again, _ := s.seal(topic, 8, payload, []crypto.PubKey{fx.reader.PublicKey(), fx.reader.PublicKey()})
	other, _ := s.seal(topic, 9, payload, []crypto.PubKey{fx.root.PublicKey()})
	if !bytes.Equal(again.KeyID, sealed.KeyID) || bytes.Equal(other.KeyID, sealed.KeyID) {
		t.Fatal("key not kept for the same readers, or kept for others")
	}
	// The publisher reads its own messages without any key agreement.
	in := &inbound{envelope: e, node: nettest.PrincipalID(t, fx.node.PublicKey())}
	if pt, ok := o.open(context.Background(), in); !ok || !bytes.Equal(pt, payload) {
		t.Fatal("the publisher cannot read its own message")
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, name := range []string{frozenPlain, frozenSealed, frozenPlainV1, frozenSealedV1} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	ps := newChecker(f, frozenNow)
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := decodeMessage(data, DefaultMaxMessage)
		if err != nil {
			if !errors.Is(err, caps.ErrMalformed) && !errors.Is(err, caps.ErrUnknownVersion) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		again, err := env.encode()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("decoded message re-encodes differently (%v)", err)
		}
		// The whole validator must not panic on anything decodable.
		ps.check(exactTopic(env.topic), data)
		ps.check(subtreeTopic(env.topic.RootPath()), data)
	})
}

// TestOpenerCachesAndRetries: a topic key is unwrapped once; a key
// agreement that fails for a passing reason (TPM unavailable) is not
// retried at every message, but is once the retry time has come.
func TestOpenerCachesAndRetries(t *testing.T) {
	fx := newFixture(t)
	topic := fx.p(t, "node", "x")
	s := newSealer(newOpener(nettest.PrincipalID(t, fx.node.PublicKey()), nil, nil))
	sealed, err := s.seal(topic, 1, []byte("secret"), []crypto.PubKey{fx.reader.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	in := &inbound{envelope: &envelope{topic: topic, seq: 1, from: fx.path, sealed: sealed}, node: nettest.PrincipalID(t, fx.node.PublicKey())}
	calls, fail := 0, true
	o := newOpener(nettest.PrincipalID(t, fx.reader.PublicKey()), func(ctx context.Context, eph *ecdh.PublicKey) ([]byte, error) {
		calls++
		if fail {
			return nil, fmt.Errorf("test: %w", tpm.ErrUnavailable)
		}
		return fx.reader.ECDH(ctx, eph)
	}, nil)
	ctx := context.Background()
	if _, ok := o.open(ctx, in); ok || calls != 1 {
		t.Fatalf("with the TPM away: readable %v after %d calls", ok, calls)
	}
	if _, readable, known := o.openCached(in); !known || readable || calls != 1 {
		t.Fatalf("failure not remembered: known %v readable %v calls %d", known, readable, calls)
	}
	e, _ := o.keys.Get(openRef(in.node, topic, sealed.KeyID))
	e.retryAt = time.Now().Add(-time.Second) // the retry time has come
	fail = false
	if _, _, known := o.openCached(in); known {
		t.Fatal("a failure past its retry time still counts as known")
	}
	for range 3 {
		if pt, ok := o.open(ctx, in); !ok || string(pt) != "secret" {
			t.Fatalf("after the TPM came back: %q, %v", pt, ok)
		}
	}
	if calls != 2 {
		t.Fatalf("%d key agreements, want 2", calls)
	}
}

// TestVerdictCache: a message accepted on one topic is accepted on another
// that carries it without a second validation; the remembered verdict
// does not let it onto a topic that does not carry it, nor outlive its
// certificate and writecaps.
func TestVerdictCache(t *testing.T) {
	fx := newFixture(t)
	topic := fx.p(t, "node", "sensors", "temp")
	now := frozenNow
	cfg := Config{Clock: func() time.Time { return now }}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	certs, _ := lru.New[[sha256.Size]byte, *caps.HostCert](certCacheSize)
	verdicts, _ := lru.New[[sha256.Size]byte, verdict](verdictCacheSize)
	ps := &PubSub{cfg: cfg, verifier: cfg.Verifier, certs: certs, verdicts: verdicts, log: cfg.Log, seen: newDedup(16)}
	ps.subs.Store(new([]*Subscription))
	data := fx.mustEncode(t, fx.envelope(topic))
	validate := func(name string) gossip.ValidationResult {
		m := &gossip.Message{Message: &pb.Message{Data: data, Topic: &name}, ReceivedFrom: fx.hostID}
		m.ID = messageID(m.Message)
		return ps.validate(context.Background(), fx.hostID, m)
	}
	steps := []struct {
		name   string
		topic  string
		want   gossip.ValidationResult
		cached uint64
	}{
		{"first copy", exactTopic(topic), gossip.ValidationAccept, 0},
		{"copy on the node's subtree", subtreeTopic(fx.path), gossip.ValidationAccept, 1},
		{"copy on the root's subtree", subtreeTopic(fx.p(t)), gossip.ValidationAccept, 2},
		{"copy on a topic that does not carry it", exactTopic(fx.p(t, "node", "sensors")), gossip.ValidationReject, 2},
	}
	for _, s := range steps {
		if got := validate(s.topic); got != s.want || ps.Stats().Cached != s.cached {
			t.Fatalf("%s: %v with %d cached, want %v with %d", s.name, got, ps.Stats().Cached, s.want, s.cached)
		}
	}
	now = fx.nodeCap.Expiry().Add(time.Hour) // past the node writecap's expiry
	if got := validate(subtreeTopic(fx.p(t))); got != gossip.ValidationReject || ps.Stats().Cached != 2 {
		t.Fatalf("after expiry: %v with %d cached, want a rejection without the cache", got, ps.Stats().Cached)
	}
}
