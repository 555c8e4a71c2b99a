package pubsub

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/libp2p/go-libp2p/core/crypto"
	"golang.org/x/sync/singleflight"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
)

// Confidential topics (docs/pubsub.md#confidential-topics). A publisher
// keeps one AES-256 key per topic and reader set; each message carries the
// key's ID, the readcaps that wrap it to each reader, and the payload
// sealed under it with the publisher's seq as nonce.

const (
	topicKeySize = 32
	// maxSealKeys bounds the topic keys a publisher keeps; a forgotten key
	// is replaced by a new one at the topic's next confidential publish.
	maxSealKeys = 1024
	// maxOpenedKeys bounds the unwrapped keys (and known non-readerships)
	// a subscriber keeps.
	maxOpenedKeys = 4096
	// decapRetry is how long a failed Decapsulate (TPM unavailable, say)
	// is remembered before the next message of that key tries again.
	decapRetry = 10 * time.Second
)

// keyPurpose is the readcap purpose (HKDF info) of topic keys: a readcap
// made for one topic does not open for another.
func keyPurpose(topic paths.Path) string { return "blocktree pubsub topic key v1 " + topic.String() }

// keyID names a topic key: the first 16 bytes of its tagged SHA-256, so a
// reader can check that what a readcap unwrapped is the key the message
// names.
func keyID(key []byte) []byte {
	h := sha256.New()
	h.Write([]byte("blocktree pubsub key id v1\x00"))
	h.Write(key)
	return h.Sum(nil)[:KeyIDSize]
}

// nonceFor is the AES-GCM nonce of a message: 4 zero bytes and the
// big-endian seq. A topic key belongs to one publisher process, whose seq
// never repeats, so no nonce repeats under a key.
func nonceFor(seq uint64) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n[4:], seq)
	return n
}

// sealAD is the associated data of a sealed payload: the topic and key ID.
func sealAD(topic paths.Path, kid []byte) []byte {
	ad := make([]byte, 0, 40+len(topic.String())+len(kid))
	ad = append(ad, "blocktree pubsub message v1\x00"...)
	ad = append(ad, topic.String()...)
	ad = append(ad, 0)
	return append(ad, kid...)
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// sealer holds a publisher's topic keys.
type sealer struct {
	opener *opener // told of every new key, so this node reads its own messages

	// mu guards keys.
	mu   sync.Mutex
	keys map[paths.Path]*sealKey
}

// sealKey is the key of one topic for one reader set.
type sealKey struct {
	readers [sha256.Size]byte // digest of the reader set
	kid     []byte
	aead    cipher.AEAD
	rcaps   [][]byte
}

func newSealer(o *opener) *sealer {
	return &sealer{opener: o, keys: make(map[paths.Path]*sealKey)}
}

// seal encrypts payload for readers under topic's key, making a new key
// (and readcaps) when the reader set differs from the key's.
func (s *sealer) seal(topic paths.Path, seq uint64, payload []byte, readers []crypto.PubKey) (*wireSealed, error) {
	unique, digest, err := readerSet(readers)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	k := s.keys[topic]
	s.mu.Unlock()
	if k == nil || k.readers != digest {
		// Wrapping costs an ECDH per reader: do it outside the lock. Two
		// racing publishes with new reader sets make two keys; the last
		// stored is used from then on, and both are valid.
		if k, err = newSealKey(topic, digest, unique); err != nil {
			return nil, err
		}
		s.opener.put(openRef(s.opener.self, topic, k.kid), k.aead)
		s.mu.Lock()
		if len(s.keys) >= maxSealKeys {
			clear(s.keys)
		}
		s.keys[topic] = k
		s.mu.Unlock()
	}
	return &wireSealed{KeyID: k.kid, Readcaps: k.rcaps, CT: k.aead.Seal(nil, nonceFor(seq), payload, sealAD(topic, k.kid))}, nil
}

// readerSet deduplicates readers by key and returns them with a digest
// of the set.
func readerSet(readers []crypto.PubKey) ([]crypto.PubKey, [sha256.Size]byte, error) {
	type entry struct {
		raw []byte
		pk  crypto.PubKey
	}
	es := make([]entry, 0, len(readers))
	for _, pk := range readers {
		if pk == nil {
			return nil, [sha256.Size]byte{}, fmt.Errorf("nil reader key: %w", ErrReaders)
		}
		raw, err := crypto.MarshalPublicKey(pk)
		if err != nil {
			return nil, [sha256.Size]byte{}, fmt.Errorf("reader key: %w: %v", ErrReaders, err)
		}
		es = append(es, entry{raw, pk})
	}
	slices.SortFunc(es, func(a, b entry) int { return bytes.Compare(a.raw, b.raw) })
	es = slices.CompactFunc(es, func(a, b entry) bool { return bytes.Equal(a.raw, b.raw) })
	if len(es) > MaxReaders {
		return nil, [sha256.Size]byte{}, fmt.Errorf("%d readers, at most %d: %w", len(es), MaxReaders, ErrReaders)
	}
	h := sha256.New()
	out := make([]crypto.PubKey, len(es))
	for i, e := range es {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(e.raw)))
		h.Write(n[:])
		h.Write(e.raw)
		out[i] = e.pk
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return out, d, nil
}

func newSealKey(topic paths.Path, digest [sha256.Size]byte, readers []crypto.PubKey) (*sealKey, error) {
	key := make([]byte, topicKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	k := &sealKey{readers: digest, kid: keyID(key), aead: aead, rcaps: make([][]byte, len(readers))}
	for i, r := range readers {
		rc, err := caps.WrapKey(r, key, keyPurpose(topic))
		if err != nil {
			return nil, fmt.Errorf("reader %d: %w: %w", i, ErrReaders, err)
		}
		k.rcaps[i] = rc.Marshal()
	}
	return k, nil
}

// opener holds the topic keys a subscriber has unwrapped, and those it
// knows it cannot, so the node key (maybe in a TPM) is used once per key.
type opener struct {
	self  paths.ID
	decap func(context.Context, *ecdh.PublicKey) ([]byte, error)
	log   *slog.Logger

	// mu guards keys.
	mu   sync.Mutex
	keys *lru.Cache[string, *openedKey]

	// unwraps shares one unwrap of a topic key among the messages that
	// need it at once, keyed by openRef.
	unwraps singleflight.Group
}

// openedKey is what a subscriber knows of one topic key: the AEAD, or nil
// when it cannot read (for good when retryAt is zero).
type openedKey struct {
	aead    cipher.AEAD
	retryAt time.Time
}

func newOpener(self paths.ID, decap func(context.Context, *ecdh.PublicKey) ([]byte, error), log *slog.Logger) *opener {
	keys, _ := lru.New[string, *openedKey](maxOpenedKeys)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &opener{self: self, decap: decap, log: log, keys: keys}
}

// openRef names a topic key: publisher node, topic and key ID.
func openRef(node paths.ID, topic paths.Path, kid []byte) string {
	return string(node) + "\x00" + topic.String() + "\x00" + string(kid)
}

func (o *opener) put(ref string, aead cipher.AEAD) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.keys.Add(ref, &openedKey{aead: aead})
}

// open returns the plaintext of a sealed message and true, or nil and
// false when this node cannot read it.
func (o *opener) open(ctx context.Context, in *inbound) ([]byte, bool) {
	s := in.sealed
	aead := o.key(ctx, openRef(in.node, in.topic, s.KeyID), in)
	if aead == nil {
		return nil, false
	}
	pt, err := aead.Open(nil, nonceFor(in.seq), s.CT, sealAD(in.topic, s.KeyID))
	if err != nil {
		o.log.Warn("confidential message does not decrypt", "topic", in.topic, "from", in.from, "seq", in.seq)
		return nil, false
	}
	return pt, true
}

// openCached is open for a message whose key is known (unwrapped, or
// known not to open): known is false when open would have to unwrap.
func (o *opener) openCached(in *inbound) (pt []byte, readable, known bool) {
	s := in.sealed
	o.mu.Lock()
	e, ok := o.keys.Get(openRef(in.node, in.topic, s.KeyID))
	o.mu.Unlock()
	switch {
	case !ok:
		return nil, false, false
	case e.aead == nil && !e.retryAt.IsZero() && !time.Now().Before(e.retryAt):
		return nil, false, false // time to try again
	case e.aead == nil:
		return nil, false, true
	}
	pt, err := e.aead.Open(nil, nonceFor(in.seq), s.CT, sealAD(in.topic, s.KeyID))
	if err != nil {
		o.log.Warn("confidential message does not decrypt", "topic", in.topic, "from", in.from, "seq", in.seq)
		return nil, false, true
	}
	return pt, true, true
}

// key returns the AEAD of the key ref, unwrapping it from in's readcaps on
// first use; concurrent first uses share one unwrap.
func (o *opener) key(ctx context.Context, ref string, in *inbound) cipher.AEAD {
	if e, ok := o.known(ref); ok {
		return e.aead
	}
	ch := o.unwraps.DoChan(ref, func() (any, error) {
		// Again, now alone: an unwrap that has just ended has cached its key.
		if e, ok := o.known(ref); ok {
			return e, nil
		}
		e := o.unwrap(ctx, in)
		o.mu.Lock()
		o.keys.Add(ref, e)
		o.mu.Unlock()
		return e, nil
	})
	select {
	case r := <-ch:
		return r.Val.(*openedKey).aead
	case <-ctx.Done():
		return nil
	}
}

// known returns what is cached of ref when it is still the answer: a key,
// a refusal for good, or one not yet due for a retry.
func (o *opener) known(ref string) (*openedKey, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.keys.Get(ref)
	return e, ok && (e.aead != nil || e.retryAt.IsZero() || time.Now().Before(e.retryAt))
}

// unwrap finds this node's readcap in in and opens it with Decapsulate.
func (o *opener) unwrap(ctx context.Context, in *inbound) *openedKey {
	s := in.sealed
	for i, b := range s.Readcaps {
		rc, err := caps.DecodeReadcap(b)
		if err != nil || rc.Reader != o.self {
			continue
		}
		if o.decap == nil {
			o.log.Debug("readcap for this node, but no Decapsulate configured", "topic", in.topic, "from", in.from)
			return &openedKey{}
		}
		dctx, cancel := context.WithTimeout(ctx, DecapsulateTimeout)
		key, err := rc.Unwrap(dctx, o.decap, keyPurpose(in.topic))
		cancel()
		switch {
		case errors.Is(err, caps.ErrTampered) || errors.Is(err, caps.ErrNotReader):
			o.log.Warn("readcap for this node does not open", "topic", in.topic, "from", in.from, "readcap", i, "err", err)
			continue
		case err != nil:
			o.log.Warn("cannot unwrap topic key now", "topic", in.topic, "from", in.from, "err", err, "retry_in", decapRetry)
			return &openedKey{retryAt: time.Now().Add(decapRetry)}
		case len(key) != topicKeySize || !bytes.Equal(keyID(key), s.KeyID):
			o.log.Warn("readcap holds another key than the message names", "topic", in.topic, "from", in.from)
			continue
		}
		aead, err := newAEAD(key)
		if err != nil {
			continue
		}
		return &openedKey{aead: aead}
	}
	return &openedKey{}
}
