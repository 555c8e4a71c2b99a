package paths

import "strings"

// Pattern is a set of paths written like a path with wildcards, for
// subscriptions:
//
//   - a component "*" matches exactly one component, whatever it is;
//   - a root "*" matches any root ID (any domain);
//   - a last component "..." matches zero or more components, so
//     "/<r>/a/..." matches "/<r>/a" itself and everything below it.
//
// Wildcards are whole components only: "a*" is the literal component "a*".
// Every other component is literal and follows the path rules, and "*" and
// "..." are reserved in paths (ErrReservedComponent), so a pattern never
// needs escaping and a literal pattern matches exactly one path.
//
// Patterns have one canonical form, like paths: ParsePattern(pt.String())
// == pt. The zero Pattern matches nothing. A Pattern is an immutable value,
// safe to copy, compare with == and use from many goroutines at once.
type Pattern struct {
	s   string // canonical text; "" for the zero Pattern
	lit int    // length of the literal prefix of s (see literalEnd)
}

// ParsePattern checks that s is a pattern and returns it. The rules are
// those of Parse, except that the root may be "*", any component after it
// may be "*", and the last component after the root may be "...". A "..."
// anywhere else is an *Error wrapping ErrBadPattern; other failures wrap the
// same sentinels as Parse.
func ParsePattern(s string) (Pattern, error) {
	if err := scan("parse pattern", s, true); err != nil {
		return Pattern{}, err
	}
	return Pattern{s, literalEnd(s)}, nil
}

// MustParsePattern is ParsePattern that panics on error. It is meant for
// constants in tests and examples, never for input.
func MustParsePattern(s string) Pattern {
	pt, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return pt
}

// String returns the canonical text of pt, "" for the zero Pattern.
func (pt Pattern) String() string { return pt.s }

// IsZero reports whether pt is the zero Pattern.
func (pt Pattern) IsZero() bool { return pt.s == "" }

// Match reports whether p is one of the paths pt stands for. It is false
// when either is zero. It does not allocate.
func (pt Pattern) Match(p Path) bool {
	if pt.s == "" || p.s == "" {
		return false
	}
	if pt.lit == len(pt.s) {
		return p.s == pt.s
	}
	// p must have the literal prefix, component-wise, then match the rest.
	if pt.lit > 0 && !p.HasPrefix(Path{pt.s[:pt.lit]}) {
		return false
	}
	// ps is the rest of the pattern after the prefix and its '/'; xs is the
	// rest of p after the prefix: "" or "/…".
	ps, xs := pt.s[pt.lit+1:], p.s[pt.lit:]
	for {
		pc, prest, pmore := strings.Cut(ps, "/")
		if pc == "..." {
			return true // zero or more of whatever is left
		}
		if xs == "" {
			return false // pc needs one more component
		}
		xc, _, xmore := strings.Cut(xs[1:], "/")
		if pc != "*" && pc != xc {
			return false
		}
		if !pmore {
			return !xmore
		}
		ps, xs = prest, xs[1+len(xc):]
	}
}

// IsLiteral reports whether pt has no wildcard, so that it matches exactly
// the path pt.Prefix(). The zero Pattern is not literal.
func (pt Pattern) IsLiteral() bool {
	return pt.s != "" && pt.lit == len(pt.s)
}

// Prefix returns the longest path every match of pt is under: the
// components before the first wildcard. It is pt itself as a path for a
// literal pattern, and the zero Path when the root is "*" (or pt is zero).
// Every p that pt matches has p.HasPrefix(pt.Prefix()).
func (pt Pattern) Prefix() Path {
	return Path{pt.s[:pt.lit]}
}

// literalEnd returns the length of the literal prefix of the pattern text
// s: the index of the '/' before the first wildcard, or len(s).
func literalEnd(s string) int {
	end := 0
	for end < len(s) {
		c, _, _ := strings.Cut(s[end+1:], "/")
		if c == "*" || c == "..." {
			break
		}
		end += 1 + len(c)
	}
	return end
}

// MarshalText returns the canonical text of pt. The zero Pattern marshals
// to empty text.
func (pt Pattern) MarshalText() ([]byte, error) { return []byte(pt.s), nil }

// UnmarshalText parses text as by ParsePattern into pt. Empty text sets the
// zero Pattern; any other invalid text is an error (Op "unmarshal") and
// leaves pt unchanged.
func (pt *Pattern) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*pt = Pattern{}
		return nil
	}
	s := string(text)
	if err := scan("unmarshal", s, true); err != nil {
		return err
	}
	*pt = Pattern{s, literalEnd(s)}
	return nil
}
