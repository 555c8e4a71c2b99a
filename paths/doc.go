// Package paths defines Blocktree's names: principal IDs, paths and path
// patterns. It is the bottom layer of Blocktree and imports only the
// standard library.
//
// # Model
//
// Every principal (anything that holds a key pair) is named by an ID: the
// libp2p peer ID of its public key in libp2p's standard string form,
// "12D3KooW…" for an Ed25519 key, "Qm…" for an RSA or ECDSA key. A domain
// is everything one root principal owns, and every absolute path starts with
// the root principal's ID:
//
//	/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/laptop/docs/report.txt
//	 └──────────────────── root ID ─────────────────────┘ └─── components ───┘
//
// A Path is always absolute and always has a root; the bare "/" is not a
// path. What a path names (a directory, a file, an actor's mailbox, a
// pub-sub topic) is up to the layers above; this package only says which
// texts are paths and how paths relate.
//
// # Canonical form
//
// Every path has exactly one spelling, so Parse(p.String()) == p and
// p.String() is the very text Parse accepted. Non-canonical spellings are
// errors, never silently cleaned: no trailing slash, no doubled slash, no "."
// or "..". The rules for a component are:
//
//   - 1 to MaxComponentLen (255) bytes;
//   - valid UTF-8, with no '/' and no NUL byte;
//   - not "." or "..";
//   - not "*" or "...", which are reserved for patterns.
//
// Any other byte sequence is allowed, including spaces, control characters
// other than NUL, and any Unicode. Components are not normalised: bytes are
// the identity, so "é" written precomposed (NFC) and "e"+U+0301 (NFD) are
// two different components, and case matters. Whoever takes names from
// people and wants them to match should normalise before calling Parse or
// Join. A whole path is at most MaxPathLen (4096) bytes.
//
// The root must be an ID in canonical form as ParseID accepts it; the CIDv1
// form of a peer ID ("bafz…") is refused, so one principal has exactly one
// path prefix.
//
// # Patterns
//
// A Pattern selects paths, for subscriptions. It is written like a path in
// which a component may be "*" (exactly one component, whatever it is), the
// root may be "*" (any domain), and the last component may be "..." (zero or
// more components, so "/<r>/a/..." matches "/<r>/a" itself as well as
// everything below it). "a*" is a literal component, not a wildcard. Because
// "*" and "..." cannot be path components, patterns need no escaping and a
// pattern without wildcards matches exactly one path.
//
// # Errors
//
// Every error returned is an *Error. It carries the operation (Op), the
// offending input (Input, cut to 100 bytes), the 1-based position of the
// offending field with the root at 1 (Index, 0 when not about one field), a
// sentinel (Err) and sometimes a Detail. Branch on the sentinel with
// errors.Is:
//
//	ErrEmpty             ""
//	ErrBareSlash         "/"
//	ErrNotAbsolute       does not start with '/'
//	ErrBadRoot           the root is not a principal ID (Detail says why)
//	ErrEmptyComponent    "//", a trailing '/', or an empty component passed to New or Join
//	ErrDotComponent      "." or ".."
//	ErrReservedComponent "*" or "..." in a path
//	ErrSlash             '/' inside one component passed to New, Join or ValidComponent
//	ErrNUL               NUL byte
//	ErrInvalidUTF8       invalid UTF-8
//	ErrComponentTooLong  a component over 255 bytes
//	ErrPathTooLong       a path over 4096 bytes
//	ErrNotUnder          Rel of a path that is not below the base
//	ErrBadID             ParseID of a text that is not a principal ID
//	ErrBadPattern        "..." other than last, or as the root of a pattern
//
// The message reads, for example:
//
//	paths: parse "/12D3KooW…/x//y": empty component at 3
//
// # Text encoding
//
// Path, Pattern and ID implement encoding.TextMarshaler and
// encoding.TextUnmarshaler, so they can be fields of JSON or CBOR documents
// and are checked while decoding. As with netip.Addr, the zero value
// encodes as empty text and empty text decodes to the zero value; a field
// that must be present has to be checked with IsZero after decoding (or
// tagged omitzero for optional fields).
//
// # Concurrency and cost
//
// IDs, Paths and Patterns are immutable values: copy them, compare them with
// ==, use them as map keys and share them between goroutines freely. No
// function keeps state. Parse, ParseID and ParsePattern do not allocate
// (Parse keeps the string it was given), and neither do HasPrefix,
// IsAncestorOf, Parent, Root, Depth, Prefix or Match; New, Join, Components
// and Rel allocate once.
package paths
