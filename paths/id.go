package paths

import (
	"fmt"
	"strings"
)

// ID is a principal ID: the libp2p peer ID of a public key in its standard
// string form, the base58btc (Bitcoin alphabet) encoding of the key's
// multihash. Two multihash forms exist, and both are accepted:
//
//   - identity (code 0x00): the multihash holds the libp2p-marshalled public
//     key itself. libp2p uses it for keys whose marshalled form is at most 42
//     bytes: Ed25519 ("12D3KooW…") and secp256k1 ("16Uiu2HA…").
//   - sha2-256 (code 0x12, 32-byte digest): the multihash holds the SHA-256
//     of the marshalled key, for larger keys such as RSA and ECDSA ("Qm…").
//
// Only this canonical form is accepted, not the CIDv1 ("bafz…") or any other
// multibase form, so ParseID(id.String()) == id for every valid id and one
// principal has exactly one ID text.
//
// An ID is a string so that it is comparable and cheap; a value made by
// conversion (ID("…")) is not checked, so take IDs from untrusted input only
// through ParseID or UnmarshalText.
type ID string

// ParseID checks that s is a principal ID in canonical form and returns it.
// It checks that s is base58btc, that the bytes are exactly one multihash
// (no trailing bytes) of a supported form, that the digest length is the
// one the code requires, and, for the identity form, that the digest is a
// marshalled Ed25519 (32-byte) or secp256k1 (33-byte compressed) public key.
// It does not check that a key is a valid curve point: that is for whoever
// uses the key. On failure it returns an *Error wrapping ErrBadID whose
// Detail says why. ParseID does not allocate on success.
func ParseID(s string) (ID, error) {
	if reason := checkID(s); reason != "" {
		return "", newError("parse id", s, 0, ErrBadID, reason)
	}
	return ID(s), nil
}

// String returns id's text.
func (id ID) String() string { return string(id) }

// MarshalText returns id's text. The empty ID marshals to empty text.
func (id ID) MarshalText() ([]byte, error) { return []byte(id), nil }

// UnmarshalText parses text as by ParseID into id. Empty text sets the empty
// ID; any other invalid text is an error (Op "unmarshal") and leaves id
// unchanged.
func (id *ID) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*id = ""
		return nil
	}
	s := string(text)
	if reason := checkID(s); reason != "" {
		return newError("unmarshal", s, 0, ErrBadID, reason)
	}
	*id = ID(s)
	return nil
}

// Multihash and libp2p key constants.
const (
	mhIdentity      = 0x00
	mhSHA2256       = 0x12
	sha256Len       = 32
	maxInlineKey    = 42 // libp2p inlines marshalled keys up to this size
	maxMultihash    = 2 + maxInlineKey
	maxIDText       = 61 // base58 digits of maxMultihash bytes, rounded up
	keyEd25519      = 1  // libp2p crypto.pb KeyType
	keySecp256k1    = 2
	ed25519KeyLen   = 32
	secp256k1KeyLen = 33 // compressed point
)

const b58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// b58Digit maps a byte to its base58 digit value, or 0xff.
var b58Digit = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := range len(b58Alphabet) {
		t[b58Alphabet[i]] = byte(i)
	}
	return t
}()

// checkID returns "" when s is a valid ID, or why not.
func checkID(s string) string {
	reason := checkMultihash(s)
	if reason != "" && (strings.HasPrefix(s, "bafz") || strings.HasPrefix(s, "k51")) {
		// The CIDv1 form of a peer ID, in base32 or base36.
		return "CIDv1 form is not accepted (want base58btc: 12D3KooW… or Qm…)"
	}
	return reason
}

// checkMultihash returns "" when s is a supported multihash in base58btc.
func checkMultihash(s string) string {
	var buf [maxMultihash]byte
	n, reason := b58Decode(s, &buf)
	if reason != "" {
		return reason
	}
	mh := buf[:n]
	if len(mh) < 2 {
		return "multihash too short"
	}
	code, size, digest := mh[0], int(mh[1]), mh[2:]
	switch code {
	case mhSHA2256:
		if size != sha256Len {
			return fmt.Sprintf("sha2-256 multihash of %d bytes, want 32", size)
		}
	case mhIdentity:
		if size > maxInlineKey {
			return fmt.Sprintf("identity multihash of %d bytes, more than 42", size)
		}
	default:
		return fmt.Sprintf("unsupported multihash code %#x (want identity 0x0 or sha2-256 0x12)", code)
	}
	switch {
	case len(digest) < size:
		return "multihash digest truncated"
	case len(digest) > size:
		return "trailing bytes after multihash"
	}
	if code == mhIdentity {
		return checkInlineKey(digest)
	}
	return ""
}

// checkInlineKey checks that d is a libp2p PublicKey protobuf (field 1:
// KeyType varint, field 2: Data bytes) holding an Ed25519 or compressed
// secp256k1 key, in its canonical encoding.
func checkInlineKey(d []byte) string {
	if len(d) < 4 || d[0] != 0x08 || d[2] != 0x12 || int(d[3]) != len(d)-4 {
		return "identity multihash does not hold a marshalled public key"
	}
	key := d[4:]
	switch d[1] {
	case keyEd25519:
		if len(key) != ed25519KeyLen {
			return fmt.Sprintf("Ed25519 key of %d bytes, want 32", len(key))
		}
	case keySecp256k1:
		if len(key) != secp256k1KeyLen || (key[0] != 2 && key[0] != 3) {
			return "secp256k1 key is not a 33-byte compressed point"
		}
	default:
		return fmt.Sprintf("inline key of type %d (only Ed25519 and secp256k1 keys are inlined)", d[1])
	}
	return ""
}

// b58Decode decodes base58btc text into buf and returns the length, or why
// it cannot. Leading '1' digits stand for leading zero bytes, as in Bitcoin.
// Every string of base58 digits decodes to bytes that encode back to the
// same string (leading '1's and leading zero bytes correspond one to one and
// the rest is a number without leading zero digits), so no re-encoding is
// needed to check canonical form. It does not allocate.
func b58Decode(s string, buf *[maxMultihash]byte) (int, string) {
	switch {
	case s == "":
		return 0, "empty"
	case len(s) > maxIDText:
		return 0, "too long"
	}
	zeros := 0
	for zeros < len(s) && s[zeros] == '1' {
		zeros++
	}
	// The number after the leading zeros, in big-endian 32-bit limbs. 61
	// digits need at most 358 bits, so 12 limbs never overflow.
	var limbs [12]uint32
	top := len(limbs) - 1 // index of the most significant limb in use
	rest := s[zeros:]
	for len(rest) > 0 {
		// Take up to 5 digits at once: 58^5 < 2^32.
		k := min(len(rest), 5)
		mul, add := uint64(1), uint64(0)
		for i := range k {
			d := b58Digit[rest[i]]
			if d == 0xff {
				return 0, fmt.Sprintf("invalid base58 character %q at %d", rest[i], len(s)-len(rest)+i)
			}
			mul *= 58
			add = add*58 + uint64(d)
		}
		rest = rest[k:]
		carry := add
		for j := len(limbs) - 1; j >= top; j-- {
			t := uint64(limbs[j])*mul + carry
			limbs[j] = uint32(t)
			carry = t >> 32
		}
		if carry != 0 { // carry < 2^32 as mul, limb < 2^32
			top--
			limbs[top] = uint32(carry)
		}
	}
	var num [4 * len(limbs)]byte
	for j, l := range limbs {
		num[4*j] = byte(l >> 24)
		num[4*j+1] = byte(l >> 16)
		num[4*j+2] = byte(l >> 8)
		num[4*j+3] = byte(l)
	}
	start := 0
	for start < len(num) && num[start] == 0 {
		start++
	}
	n := zeros + len(num) - start
	if n > len(buf) {
		return 0, "too long"
	}
	// buf is zeroed, so the leading zero bytes are already there.
	copy(buf[zeros:], num[start:])
	return n, ""
}
