package client

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/canon"
)

// Domain-separation strings of the sealed formats (docs/fs.md).
const (
	infoName  = "blocktree fs v1 name key"
	infoInode = "blocktree fs v1 inode"
	infoEntry = "blocktree fs v1 entry"
	infoChunk = "blocktree fs v1 chunk"
)

// strict is internal/canon's strict decoder with the limits of package
// fsys's records and Txs (canon's defaults are too small for a large
// file's chunk list).
var strict, strictErr = canon.NewDecoder(
	canon.WithMaxSize(fsys.MaxTxSize),
	canon.WithMaxNested(8),
	canon.WithMaxArrayElements(fsys.MaxTxRecords),
	canon.WithMaxMapPairs(64),
)

// strictUnmarshal decodes data into v and refuses anything that is not the
// one canonical encoding of the result.
func strictUnmarshal(data []byte, v any) error {
	if strictErr != nil {
		return strictErr
	}
	return strict.Unmarshal(data, v)
}

// ---- keys and sealing ----

func derive(secret, salt []byte, info string) []byte {
	k, err := hkdf.Key(sha256.New, secret, salt, info, 32)
	if err != nil { // only for absurd lengths
		panic(err)
	}
	return k
}

// nameKey derives a directory's name-MAC key from its key.
func nameKey(dirKey []byte) []byte { return derive(dirKey, nil, infoName) }

// nameMAC is an entry's record name: HMAC-SHA256(name key, name).
func nameMAC(nk []byte, name string) [32]byte {
	m := hmac.New(sha256.New, nk)
	m.Write([]byte(name))
	var out [32]byte
	m.Sum(out[:0])
	return out
}

const (
	saltSize = 16
	tagSize  = 16
	// sealOverhead: version byte, salt, GCM tag.
	sealOverhead = 1 + saltSize + tagSize
)

var zeroNonce [12]byte

func gcmFor(key, salt []byte, info string) (cipher.AEAD, error) {
	b, err := aes.NewCipher(derive(key, salt, info))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// sealBox seals plain under HKDF(key, fresh salt, info) with a zero nonce:
// version(1) ‖ salt(16) ‖ ciphertext ‖ tag.
func sealBox(key []byte, info string, ad, plain []byte) ([]byte, error) {
	out := make([]byte, 1+saltSize, 1+saltSize+len(plain)+tagSize)
	out[0] = fsys.FormatVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	g, err := gcmFor(key, out[1:1+saltSize], info)
	if err != nil {
		return nil, err
	}
	return g.Seal(out, zeroNonce[:], plain, ad), nil
}

func openBox(key []byte, info string, ad, sealed []byte) ([]byte, error) {
	if len(sealed) < sealOverhead {
		return nil, fmt.Errorf("sealed %s of %d bytes: %w", info, len(sealed), fsys.ErrIntegrity)
	}
	if sealed[0] != fsys.FormatVersion {
		return nil, fmt.Errorf("sealed %s version %d: %w", info, sealed[0], fsys.ErrIntegrity)
	}
	g, err := gcmFor(key, sealed[1:1+saltSize], info)
	if err != nil {
		return nil, err
	}
	plain, err := g.Open(nil, zeroNonce[:], sealed[1+saltSize:], ad)
	if err != nil {
		return nil, fmt.Errorf("%s does not authenticate: %w", info, fsys.ErrIntegrity)
	}
	return plain, nil
}

// recordAD is the associated data of a sealed record: the info string, a
// zero byte, the kind ('i' inode, 'e' entry), the Ino and the Name.
func recordAD(kind byte, k fsys.RecordKey) []byte {
	ad := make([]byte, 0, 32+1+1+8+32)
	if kind == 'i' {
		ad = append(ad, infoInode...)
	} else {
		ad = append(ad, infoEntry...)
	}
	ad = append(ad, 0, kind)
	ad = binary.BigEndian.AppendUint64(ad, uint64(k.Ino))
	return append(ad, k.Name[:]...)
}

// chunkAD binds a chunk block to its file and index.
func chunkAD(ino fsys.Ino, index uint64) []byte {
	ad := make([]byte, 0, len(infoChunk)+1+16)
	ad = append(ad, infoChunk...)
	ad = append(ad, 0)
	ad = binary.BigEndian.AppendUint64(ad, uint64(ino))
	return binary.BigEndian.AppendUint64(ad, index)
}

// ---- inodes ----

// chunkRef is one stored chunk of a file: plaintext bytes
// [Index·ChunkSize, Index·ChunkSize+Len) are in block CID, sealed under
// HKDF(file key, Salt); the rest of the chunk (up to the file size) is
// zeros. A chunk with no ref is a hole.
type chunkRef struct {
	Index uint64
	CID   cid.Cid
	Salt  [saltSize]byte
	Len   uint32
}

const (
	cidLen      = 36 // CIDv1 raw sha2-256, binary
	chunkRefLen = 8 + cidLen + saltSize + 4
)

// inode is a sealed inode record's plaintext (docs/fs.md).
type inode struct {
	V       uint      `cbor:"v"`
	Kind    fsys.Kind `cbor:"kind"`
	Mode    uint32    `cbor:"mode"`
	Size    uint64    `cbor:"size"`
	Nlink   uint32    `cbor:"nlink"`
	Mtime   int64     `cbor:"mtime"`
	Ctime   int64     `cbor:"ctime"`
	Atime   int64     `cbor:"atime"`
	Owner   string    `cbor:"owner"`
	Name    string    `cbor:"name,omitempty"`
	Target  string    `cbor:"target,omitempty"`
	Readers []string  `cbor:"readers,omitempty"`
	Chunks  []byte    `cbor:"chunks,omitempty"` // packed chunkRefs, ascending Index

	refs []chunkRef `cbor:"-"`
}

func (n *inode) clone() *inode {
	m := *n
	m.Readers = append([]string(nil), n.Readers...)
	m.refs = append([]chunkRef(nil), n.refs...)
	m.Chunks = nil
	return &m
}

func packRefs(refs []chunkRef) []byte {
	if len(refs) == 0 {
		return nil
	}
	out := make([]byte, 0, len(refs)*chunkRefLen)
	for _, r := range refs {
		out = binary.BigEndian.AppendUint64(out, r.Index)
		out = append(out, r.CID.Bytes()...)
		out = append(out, r.Salt[:]...)
		out = binary.BigEndian.AppendUint32(out, r.Len)
	}
	return out
}

func unpackRefs(b []byte) ([]chunkRef, error) {
	if len(b)%chunkRefLen != 0 || len(b)/chunkRefLen > fsys.MaxChunkRefs {
		return nil, errors.New("bad chunk list length")
	}
	refs := make([]chunkRef, len(b)/chunkRefLen)
	for i := range refs {
		e := b[i*chunkRefLen:]
		r := &refs[i]
		r.Index = binary.BigEndian.Uint64(e)
		c, err := cid.Cast(e[8 : 8+cidLen])
		if err != nil || c.Prefix().Version != 1 || c.Prefix().Codec != cid.Raw || c.Prefix().MhType != 0x12 {
			return nil, errors.New("bad chunk CID")
		}
		r.CID = c
		copy(r.Salt[:], e[8+cidLen:])
		r.Len = binary.BigEndian.Uint32(e[8+cidLen+saltSize:])
		if r.Len == 0 || r.Len > fsys.ChunkSize {
			return nil, errors.New("bad chunk length")
		}
		if i > 0 && r.Index <= refs[i-1].Index {
			return nil, errors.New("chunk list not ascending")
		}
	}
	return refs, nil
}

// check validates a decoded inode's invariants.
func (n *inode) check() error {
	if n.V != fsys.FormatVersion {
		return fmt.Errorf("inode version %d", n.V)
	}
	switch n.Kind {
	case fsys.KindFile, fsys.KindDir, fsys.KindSymlink:
	default:
		return fmt.Errorf("inode kind %d", n.Kind)
	}
	if n.Mode&^07777 != 0 {
		return fmt.Errorf("inode mode %o", n.Mode)
	}
	if len(n.Target) > fsys.MaxTargetLen || (n.Kind == fsys.KindSymlink) != (n.Target != "") {
		return errors.New("bad symlink target")
	}
	if n.Kind != fsys.KindFile && len(n.Chunks) > 0 {
		return errors.New("chunks on a non-file")
	}
	if len(n.Readers) > 1024 {
		return errors.New("too many readers")
	}
	refs, err := unpackRefs(n.Chunks)
	if err != nil {
		return err
	}
	if len(refs) > 0 {
		last := refs[len(refs)-1]
		if last.Index > (1<<63)/fsys.ChunkSize || last.Index*fsys.ChunkSize+uint64(last.Len) > n.Size {
			return errors.New("chunk past the file size")
		}
	}
	n.refs = refs
	return nil
}

func encodeInode(n *inode) ([]byte, error) {
	n.V = fsys.FormatVersion
	n.Chunks = packRefs(n.refs)
	b, err := canon.Marshal(n)
	n.Chunks = nil
	return b, err
}

// decodeInode parses an inode's plaintext; errors wrap ErrIntegrity (it
// authenticated, so a bad encoding is a writer's bug or an attack).
func decodeInode(b []byte) (*inode, error) {
	var n inode
	if err := strictUnmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("fsys: inode: %w: %v", fsys.ErrIntegrity, err)
	}
	if err := n.check(); err != nil {
		return nil, fmt.Errorf("fsys: inode: %w: %v", fsys.ErrIntegrity, err)
	}
	n.Chunks = nil
	return &n, nil
}

func sealInode(key []byte, ino fsys.Ino, n *inode) ([]byte, error) {
	plain, err := encodeInode(n)
	if err != nil {
		return nil, err
	}
	return sealBox(key, infoInode, recordAD('i', fsys.RecordKey{Ino: ino}), plain)
}

func openInode(key []byte, ino fsys.Ino, sealed []byte) (*inode, error) {
	plain, err := openBox(key, infoInode, recordAD('i', fsys.RecordKey{Ino: ino}), sealed)
	if err != nil {
		return nil, fmt.Errorf("fsys: inode %x: %w", uint64(ino), err)
	}
	return decodeInode(plain)
}

// ---- entries ----

// entry is a sealed entry record's plaintext: the name, the child and the
// child's key (protected by the sealing under the directory's key).
type entry struct {
	V    uint      `cbor:"v"`
	Name string    `cbor:"name"`
	Ino  fsys.Ino  `cbor:"ino"`
	Kind fsys.Kind `cbor:"kind"`
	Key  []byte    `cbor:"key"`
}

func decodeEntry(b []byte) (*entry, error) {
	var e entry
	if err := strictUnmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("fsys: entry: %w: %v", fsys.ErrIntegrity, err)
	}
	if e.V != fsys.FormatVersion || e.Ino == 0 || len(e.Key) != fsys.KeySize || e.Kind < fsys.KindFile || e.Kind > fsys.KindSymlink ||
		validName(e.Name) != nil {
		return nil, fmt.Errorf("fsys: entry: %w: bad fields", fsys.ErrIntegrity)
	}
	return &e, nil
}

func sealEntry(dirKey []byte, k fsys.RecordKey, e *entry) ([]byte, error) {
	e.V = fsys.FormatVersion
	plain, err := canon.Marshal(e)
	if err != nil {
		return nil, err
	}
	return sealBox(dirKey, infoEntry, recordAD('e', k), plain)
}

func openEntry(dirKey []byte, k fsys.RecordKey, sealed []byte) (*entry, error) {
	plain, err := openBox(dirKey, infoEntry, recordAD('e', k), sealed)
	if err != nil {
		return nil, fmt.Errorf("fsys: entry in %x: %w", uint64(k.Ino), err)
	}
	return decodeEntry(plain)
}

func validName(name string) error {
	if len(name) > fsys.MaxName {
		return fsys.ErrNameTooLong
	}
	if name == "" || name == "." || name == ".." || !utf8.ValidString(name) {
		return fsys.ErrInvalid
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return fsys.ErrInvalid
		}
	}
	return nil
}
