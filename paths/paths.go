package paths

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on the size of a path. Both count bytes, not runes.
const (
	// MaxComponentLen is the longest a component may be, in bytes.
	MaxComponentLen = 255
	// MaxPathLen is the longest a whole path (or pattern) may be, in bytes,
	// counting every '/' and the root ID.
	MaxPathLen = 4096
)

// Sentinel errors. Every error this package returns is an *Error whose Err
// field is one of these, so callers branch with errors.Is:
//
//	if errors.Is(err, paths.ErrNUL) { … }
var (
	ErrEmpty             = errors.New("empty path")
	ErrBareSlash         = errors.New(`bare "/" is not a path`)
	ErrNotAbsolute       = errors.New(`not absolute (must start with "/")`)
	ErrBadRoot           = errors.New("root is not a principal ID")
	ErrEmptyComponent    = errors.New("empty component")
	ErrDotComponent      = errors.New(`"." or ".." component`)
	ErrReservedComponent = errors.New(`reserved component ("*" or "...")`)
	ErrSlash             = errors.New(`"/" in component`)
	ErrNUL               = errors.New("NUL byte in component")
	ErrInvalidUTF8       = errors.New("invalid UTF-8 in component")
	ErrComponentTooLong  = errors.New("component longer than 255 bytes")
	ErrPathTooLong       = errors.New("path longer than 4096 bytes")
	ErrNotUnder          = errors.New("not under the base path")
	ErrBadID             = errors.New("not a principal ID")
	ErrBadPattern        = errors.New("bad pattern")
)

// Error is the one error type of this package. It says which operation
// failed, on what input, where, and which rule was broken.
//
// Its message has the form
//
//	paths: parse "/x//y": empty component at 2
//	paths: parse id "bafzaa…": not a principal ID: CIDv1 form is not accepted
type Error struct {
	// Op is the operation: "parse", "parse id", "parse pattern", "new",
	// "join", "component", "rel" or "unmarshal".
	Op string
	// Input is the offending input: the whole path for parse operations,
	// the offending component for New, Join and ValidComponent. Inputs longer
	// than 100 bytes are cut and end in "...".
	Input string
	// Index is the 1-based position of the offending field, counting the
	// root as 1 and the first component after it as 2 (so in "/x//y" the
	// empty component is at 2). It is 0 when the error is about no single
	// field (ErrEmpty, ErrPathTooLong, ErrNotUnder, …).
	Index int
	// Err is one of the sentinel errors above.
	Err error
	// Detail optionally says more, such as why a root is not a principal ID.
	Detail string
}

// Error formats the error as described on the type.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("paths: ")
	b.WriteString(e.Op)
	b.WriteByte(' ')
	b.WriteString(strconv.Quote(e.Input))
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	if e.Index > 0 {
		b.WriteString(" at ")
		b.WriteString(strconv.Itoa(e.Index))
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap returns the sentinel, so errors.Is(err, paths.ErrNUL) works.
func (e *Error) Unwrap() error { return e.Err }

// maxErrInput is how much of an input an Error keeps.
const maxErrInput = 100

func newError(op, input string, index int, sentinel error, detail string) *Error {
	if len(input) > maxErrInput {
		n := maxErrInput
		// Cut on a rune boundary where the input is valid UTF-8 there.
		for n > maxErrInput-utf8.UTFMax && !utf8.RuneStart(input[n]) {
			n--
		}
		input = input[:n] + "..."
	}
	return &Error{Op: op, Input: input, Index: index, Err: sentinel, Detail: detail}
}

// Path is a canonical absolute Blocktree path: "/<root-id>" followed by zero
// or more "/<component>". The only way to get a non-zero Path is through
// Parse, New, Join, Parent, RootPath or UnmarshalText, so every non-zero Path
// is valid and canonical. Two Paths name the same place exactly when they are
// ==, so Path works as a map key.
//
// The zero Path is not a path: IsZero reports true, String returns "", every
// predicate on it is false and Join and Rel on it fail.
//
// A Path is an immutable value; it is safe to copy and to use from many
// goroutines at once.
type Path struct {
	s string // canonical text; "" for the zero Path
}

// Parse checks that s is a canonical path and returns it as a Path.
// A non-canonical spelling (a trailing or doubled slash, "." or "..") is an
// error, not silently cleaned. Parse keeps s itself, without copying it.
//
// On failure it returns an *Error wrapping the sentinel of the first rule
// broken, reading left to right: ErrEmpty, ErrPathTooLong, ErrNotAbsolute,
// ErrBareSlash, then for the root ErrEmptyComponent or ErrBadRoot, then for
// each component ErrEmptyComponent, ErrComponentTooLong, ErrNUL,
// ErrInvalidUTF8, ErrDotComponent or ErrReservedComponent.
func Parse(s string) (Path, error) {
	if err := scan("parse", s, false); err != nil {
		return Path{}, err
	}
	return Path{s}, nil
}

// MustParse is Parse that panics on error. It is meant for constants in
// tests and examples, never for input.
func MustParse(s string) Path {
	p, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return p
}

// New returns the path of the given components under root, or the root path
// "/<root>" when there are none. Each component is checked as by
// ValidComponent; the Error's Index is the component's position in the
// resulting path (the first component is at 2).
func New(root ID, components ...string) (Path, error) {
	const op = "new"
	if reason := checkID(string(root)); reason != "" {
		return Path{}, newError(op, string(root), 1, ErrBadRoot, reason)
	}
	return build(op, "/", string(root), 2, components)
}

// build appends components to the valid path pre+base; first is the
// position of the first new component, for errors. It allocates once.
func build(op, pre, base string, first int, components []string) (Path, error) {
	n := len(pre) + len(base)
	for i, c := range components {
		if err := checkComponent(c, true); err != nil {
			return Path{}, newError(op, c, first+i, err, "")
		}
		n += 1 + len(c)
	}
	if n > MaxPathLen {
		return Path{}, newError(op, pre+base+"/"+strings.Join(components, "/"), 0, ErrPathTooLong, "")
	}
	if pre == "" && len(components) == 0 {
		return Path{base}, nil
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(pre)
	b.WriteString(base)
	for _, c := range components {
		b.WriteByte('/')
		b.WriteString(c)
	}
	return Path{b.String()}, nil
}

// String returns the canonical text of p, "" for the zero Path.
func (p Path) String() string { return p.s }

// IsZero reports whether p is the zero Path, which is no path at all.
func (p Path) IsZero() bool { return p.s == "" }

// rootEnd returns the index of the '/' after the root ID, or len(p.s).
func (p Path) rootEnd() int {
	if p.s == "" {
		return 0
	}
	if i := strings.IndexByte(p.s[1:], '/'); i >= 0 {
		return i + 1
	}
	return len(p.s)
}

// Root returns the ID of p's root principal, "" for the zero Path.
func (p Path) Root() ID {
	if p.s == "" {
		return ""
	}
	return ID(p.s[1:p.rootEnd()])
}

// RootPath returns the root path "/<root-id>" of p; the zero Path gives the
// zero Path.
func (p Path) RootPath() Path { return Path{p.s[:p.rootEnd()]} }

// Components returns the components of p after the root, in a new slice
// that the caller owns. It is empty (nil) for a root path and the zero Path.
func (p Path) Components() []string {
	rest := p.s[p.rootEnd():]
	if rest == "" {
		return nil
	}
	return split(rest[1:])
}

// split splits a non-empty '/'-separated list into a new slice.
func split(s string) []string {
	out := make([]string, 0, strings.Count(s, "/")+1)
	for {
		i := strings.IndexByte(s, '/')
		if i < 0 {
			return append(out, s)
		}
		out = append(out, s[:i])
		s = s[i+1:]
	}
}

// Depth returns the number of components after the root: 0 for a root path
// (and for the zero Path), 2 for "/<root>/a/b".
func (p Path) Depth() int {
	if p.s == "" {
		return 0
	}
	return strings.Count(p.s, "/") - 1
}

// Base returns the last component of p, or the root ID's text for a root
// path, or "" for the zero Path.
func (p Path) Base() string {
	return p.s[strings.LastIndexByte(p.s, '/')+1:]
}

// Join returns the path of the given components below p. Each argument is
// one component, checked as by ValidComponent (so "a/b" is an ErrSlash
// error, not two components); the Error's Index is the position the
// component would have had. Join with no components returns p. Joining to
// the zero Path fails with ErrEmpty.
func (p Path) Join(components ...string) (Path, error) {
	if p.s == "" {
		return Path{}, newError("join", "", 0, ErrEmpty, "")
	}
	return build("join", "", p.s, p.Depth()+2, components)
}

// Parent returns the path one component up and true, or the zero Path and
// false when p is a root path or the zero Path.
func (p Path) Parent() (Path, bool) {
	i := strings.LastIndexByte(p.s, '/')
	if i <= 0 {
		return Path{}, false
	}
	return Path{p.s[:i]}, true
}

// Ancestor returns p's ancestor with depth components after the root (p
// itself when it has no more) and true, or the zero Path and false for
// the zero Path or a negative depth. Ancestor(0) is the root path,
// Ancestor(1) a node path. It does not allocate.
func (p Path) Ancestor(depth int) (Path, bool) {
	if p.s == "" || depth < 0 {
		return Path{}, false
	}
	i := p.rootEnd()
	for range depth {
		if i == len(p.s) {
			return p, true
		}
		j := strings.IndexByte(p.s[i+1:], '/')
		if j < 0 {
			return p, true
		}
		i += 1 + j
	}
	return Path{p.s[:i]}, true
}

// HasPrefix reports whether q is p or an ancestor of p. It compares whole
// components: "/<r>/ab" does not have the prefix "/<r>/a". It is false when
// either is the zero Path. It does not allocate.
func (p Path) HasPrefix(q Path) bool {
	if q.s == "" || !strings.HasPrefix(p.s, q.s) {
		return false
	}
	return len(p.s) == len(q.s) || p.s[len(q.s)] == '/'
}

// IsAncestorOf reports whether p is a strict ancestor of q: q is below p and
// not p itself.
func (p Path) IsAncestorOf(q Path) bool {
	return len(q.s) > len(p.s) && q.HasPrefix(p)
}

// Rel returns the components of desc below p, in a new slice: nil when desc
// is p, ["c", "d"] for p "/<r>/a/b" and desc "/<r>/a/b/c/d". When desc is
// neither p nor below it (or either is the zero Path), Rel returns an *Error
// wrapping ErrNotUnder.
func (p Path) Rel(desc Path) ([]string, error) {
	if !desc.HasPrefix(p) {
		return nil, newError("rel", desc.s, 0, ErrNotUnder, strconv.Quote(p.s))
	}
	if len(desc.s) == len(p.s) {
		return nil, nil
	}
	return split(desc.s[len(p.s)+1:]), nil
}

// MarshalText returns the canonical text of p. Like netip.Addr, the zero
// Path marshals to empty text.
func (p Path) MarshalText() ([]byte, error) { return []byte(p.s), nil }

// UnmarshalText parses text as by Parse into p. Empty text sets the zero
// Path, so a zero Path survives a round trip; any other invalid text is an
// error (with Op "unmarshal") and leaves p unchanged.
func (p *Path) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*p = Path{}
		return nil
	}
	s := string(text)
	if err := scan("unmarshal", s, false); err != nil {
		return err
	}
	*p = Path{s}
	return nil
}

// ValidComponent reports whether c may be one component of a path. It
// returns nil or an *Error (Op "component", Index 0) wrapping the first rule
// broken, checked in this order: ErrEmptyComponent, ErrComponentTooLong,
// ErrSlash, ErrNUL, ErrInvalidUTF8, ErrDotComponent, ErrReservedComponent.
func ValidComponent(c string) error {
	if err := checkComponent(c, true); err != nil {
		return newError("component", c, 0, err, "")
	}
	return nil
}

// checkComponent returns the sentinel for the first rule c breaks, or nil.
// Callers that got c by splitting on '/' pass slash=false.
func checkComponent(c string, slash bool) error {
	switch {
	case c == "":
		return ErrEmptyComponent
	case len(c) > MaxComponentLen:
		return ErrComponentTooLong
	case slash && strings.IndexByte(c, '/') >= 0:
		return ErrSlash
	case strings.IndexByte(c, 0) >= 0:
		return ErrNUL
	case !utf8.ValidString(c):
		return ErrInvalidUTF8
	case c == "." || c == "..":
		return ErrDotComponent
	case c == "*" || c == "...":
		return ErrReservedComponent
	}
	return nil
}

// scan checks s as a path (pattern=false) or a pattern and returns nil or
// the *Error for the first rule broken. It does not allocate on success.
func scan(op, s string, pattern bool) error {
	switch {
	case s == "":
		return newError(op, s, 0, ErrEmpty, "")
	case len(s) > MaxPathLen:
		return newError(op, s, 0, ErrPathTooLong, "")
	case s[0] != '/':
		return newError(op, s, 0, ErrNotAbsolute, "")
	case s == "/":
		return newError(op, s, 0, ErrBareSlash, "")
	}
	// The root, then the components. In the common case of a path with no
	// NUL and valid UTF-8 throughout, two fast passes over the whole path
	// spare those checks per component ('/' is ASCII, so a valid whole has
	// valid parts).
	c, rest, more := strings.Cut(s[1:], "/")
	switch {
	case c == "":
		return newError(op, s, 1, ErrEmptyComponent, "")
	case pattern && c == "*":
	case pattern && c == "...":
		return newError(op, s, 1, ErrBadPattern, `"..." cannot be the root`)
	default:
		if reason := checkID(c); reason != "" {
			return newError(op, s, 1, ErrBadRoot, reason)
		}
	}
	clean := strings.IndexByte(rest, 0) < 0 && utf8.ValidString(rest)
	for idx := 2; more; idx++ {
		c, rest, more = strings.Cut(rest, "/")
		switch {
		case pattern && c == "*":
			continue
		case pattern && c == "...":
			if more {
				return newError(op, s, idx, ErrBadPattern, `"..." must be the last component`)
			}
			continue
		}
		var err error
		switch {
		case !clean:
			err = checkComponent(c, false)
		case c == "":
			err = ErrEmptyComponent
		case len(c) > MaxComponentLen:
			err = ErrComponentTooLong
		case len(c) <= 3: // the only short cases left
			switch c {
			case ".", "..":
				err = ErrDotComponent
			case "*", "...":
				err = ErrReservedComponent
			}
		}
		if err != nil {
			return newError(op, s, idx, err, "")
		}
	}
	return nil
}
