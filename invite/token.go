package invite

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
)

// Token is what `bt invite` prints and `bt join` takes: where the inviter
// is, which domain and name the invite is for, and the one-time secret.
type Token struct {
	Root   paths.ID
	Name   string
	Addrs  []ma.Multiaddr // the inviter's addresses, each ending in /p2p/<peer-id>
	Secret []byte         // SecretSize random bytes
}

// SecretSize is the length of an invite secret.
const SecretSize = 32

// tokenPrefix starts every token, naming the format and its version.
const tokenPrefix = "btinvite1-"

// maxTokenLen bounds a token's text; addresses are few and short.
const maxTokenLen = 4096

// ErrBadToken: the text is not an invite token.
var ErrBadToken = errors.New("not a valid invite token")

type wireToken struct {
	V      uint     `cbor:"v"`
	Root   string   `cbor:"root"`
	Name   string   `cbor:"name"`
	Addrs  [][]byte `cbor:"addrs"`
	Secret []byte   `cbor:"secret"`
}

// String encodes the token as one line of URL-safe text.
func (t Token) String() string {
	w := wireToken{V: 1, Root: string(t.Root), Name: t.Name, Secret: t.Secret}
	for _, a := range t.Addrs {
		w.Addrs = append(w.Addrs, a.Bytes())
	}
	b, err := canon.Marshal(&w)
	if err != nil {
		return "" // only for values no Token can hold
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseToken decodes a token. Errors wrap ErrBadToken and say what is wrong.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	bad := func(f string, a ...any) (Token, error) {
		return Token{}, fmt.Errorf("%w: %s", ErrBadToken, fmt.Sprintf(f, a...))
	}
	if len(s) > maxTokenLen {
		return bad("%d characters, at most %d", len(s), maxTokenLen)
	}
	if !strings.HasPrefix(s, tokenPrefix) {
		return bad("it does not start with %q (copy the whole line `bt invite` printed)", tokenPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(s[len(tokenPrefix):])
	if err != nil {
		return bad("%v", err)
	}
	var w wireToken
	if err := canon.Unmarshal(b, &w); err != nil {
		return bad("%v", err)
	}
	if w.V != 1 {
		return bad("version %d (this bt reads version 1)", w.V)
	}
	root, err := paths.ParseID(w.Root)
	if err != nil {
		return bad("root: %v", err)
	}
	if err := paths.ValidComponent(w.Name); err != nil {
		return bad("name: %v", err)
	}
	if len(w.Secret) != SecretSize {
		return bad("secret of %d bytes", len(w.Secret))
	}
	if len(w.Addrs) == 0 || len(w.Addrs) > 32 {
		return bad("%d addresses", len(w.Addrs))
	}
	t := Token{Root: root, Name: w.Name, Secret: w.Secret}
	for _, ab := range w.Addrs {
		a, err := ma.NewMultiaddrBytes(ab)
		if err != nil {
			return bad("address: %v", err)
		}
		t.Addrs = append(t.Addrs, a)
	}
	return t, nil
}
