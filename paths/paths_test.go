package paths

import (
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const root = "/" + idEd25519

// longPath returns a valid path of exactly n bytes (n >= len(root)+2) under
// root, made of 255-byte components and a shorter last one.
func longPath(t testing.TB, n int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(root)
	for b.Len() < n {
		c := min(MaxComponentLen, n-b.Len()-1)
		if c < 1 {
			t.Fatalf("longPath(%d): cannot fill", n)
		}
		b.WriteByte('/')
		b.WriteString(strings.Repeat("x", c))
	}
	if b.Len() != n {
		t.Fatalf("longPath(%d) made %d bytes", n, b.Len())
	}
	return b.String()
}

func TestParseValid(t *testing.T) {
	cases := []struct {
		name  string
		in    string
		depth int
	}{
		{"root Ed25519", root, 0},
		{"root secp256k1", "/" + idSecp256k1, 0},
		{"root ECDSA", "/" + idECDSA, 0},
		{"root RSA", "/" + idRSA, 0},
		{"one component", root + "/laptop", 1},
		{"five components", root + "/laptop/docs/2024/q1/report.txt", 5},
		{"dots in names", root + "/.hidden/a./..../.a.", 4},
		{"star inside names", root + "/a*/**/*b", 3},
		{"space and tab", root + "/a b/\t", 2},
		{"control characters", root + "/\x01\x7f/\n", 2},
		{"UTF-8", root + "/Grüße/日本語/🙂", 3},
		{"non-NFC stays as is", root + "/e\u0301", 1},
		{"NFC", root + "/\u00e9", 1},
		{"backslash", root + `/a\b`, 1},
		{"ID as component", root + "/" + idRSA, 1},
		{"255-byte component", root + "/" + strings.Repeat("c", 255), 1},
		{"255-byte UTF-8 component", root + "/" + strings.Repeat("é", 127) + "x", 1},
		{"4096-byte path", longPath(t, MaxPathLen), 16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if p.String() != tc.in {
				t.Errorf("String() = %q, want %q", p, tc.in)
			}
			if p.IsZero() {
				t.Error("IsZero() = true")
			}
			if p.Depth() != tc.depth {
				t.Errorf("Depth() = %d, want %d", p.Depth(), tc.depth)
			}
			if q, err := Parse(p.String()); err != nil || q != p {
				t.Errorf("Parse(String()) = %v, %v; want %v", q, err, p)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		err   error
		index int
	}{
		{"empty", "", ErrEmpty, 0},
		{"bare slash", "/", ErrBareSlash, 0},
		{"relative", idEd25519 + "/a", ErrNotAbsolute, 0},
		{"relative component", "a/b", ErrNotAbsolute, 0},
		{"leading space", " " + root, ErrNotAbsolute, 0},
		{"double slash", "//", ErrEmptyComponent, 1},
		{"empty root", "//a", ErrEmptyComponent, 1},
		{"bad root", "/x/a", ErrBadRoot, 1},
		{"root dot", "/./a", ErrBadRoot, 1},
		{"root star", "/*/a", ErrBadRoot, 1},
		{"root dots", "/.../a", ErrBadRoot, 1},
		{"root CIDv1", "/" + cidEd25519 + "/a", ErrBadRoot, 1},
		{"root with trailing garbage", "/" + idEd25519 + "x/a", ErrBadRoot, 1},
		{"root trailing slash", root + "/", ErrEmptyComponent, 2},
		{"trailing slash", root + "/a/", ErrEmptyComponent, 3},
		{"doubled slash", root + "/a//b", ErrEmptyComponent, 3},
		{"doubled slash after root", root + "//a", ErrEmptyComponent, 2},
		{"dot", root + "/.", ErrDotComponent, 2},
		{"dot inside", root + "/a/./b", ErrDotComponent, 3},
		{"dot dot", root + "/a/..", ErrDotComponent, 3},
		{"star", root + "/*", ErrReservedComponent, 2},
		{"ellipsis", root + "/a/...", ErrReservedComponent, 3},
		{"NUL", root + "/a\x00b", ErrNUL, 2},
		{"NUL alone", root + "/a/\x00", ErrNUL, 3},
		{"invalid UTF-8 byte", root + "/a/\xff", ErrInvalidUTF8, 3},
		{"truncated UTF-8", root + "/\xc3", ErrInvalidUTF8, 2},
		{"surrogate half", root + "/\xed\xa0\x80", ErrInvalidUTF8, 2},
		{"overlong encoding", root + "/\xc0\xaf", ErrInvalidUTF8, 2},
		{"NUL before invalid UTF-8", root + "/\xff\x00", ErrNUL, 2},
		{"256-byte component", root + "/" + strings.Repeat("c", 256), ErrComponentTooLong, 2},
		{"256-byte UTF-8 component", root + "/a/" + strings.Repeat("é", 128), ErrComponentTooLong, 3},
		{"4097-byte path", longPath(t, MaxPathLen+1), ErrPathTooLong, 0},
		{"huge path", "/" + strings.Repeat("a", 1<<20), ErrPathTooLong, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Parse(%q) = %v, %v; want %v", tc.in, p, err, tc.err)
			}
			if !p.IsZero() {
				t.Errorf("failed Parse returned non-zero %v", p)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not an *Error", err)
			}
			if e.Op != "parse" || e.Index != tc.index {
				t.Errorf("Op, Index = %q, %d; want \"parse\", %d", e.Op, e.Index, tc.index)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"empty component", func() error { _, err := Parse(root + "/x//y"); return err },
			`paths: parse "` + root + `/x//y": empty component at 3`},
		{"empty", func() error { _, err := Parse(""); return err },
			`paths: parse "": empty path`},
		{"NUL", func() error { _, err := Parse(root + "/a\x00"); return err },
			`paths: parse "` + root + `/a\x00": NUL byte in component at 2`},
		{"bad root", func() error { _, err := Parse("/x//y"); return err },
			`paths: parse "/x//y": root is not a principal ID at 1: multihash too short`},
		{"CIDv1 root", func() error { _, err := Parse("/" + cidEd25519); return err },
			`paths: parse "/` + cidEd25519 + `": root is not a principal ID at 1: CIDv1 form is not accepted (want base58btc: 12D3KooW… or Qm…)`},
		{"join slash", func() error { _, err := MustParse(root+"/a").Join("b", "c/d"); return err },
			`paths: join "c/d": "/" in component at 4`},
		{"rel", func() error { _, err := MustParse(root + "/a").Rel(MustParse(root + "/b")); return err },
			`paths: rel "` + root + `/b": not under the base path: "` + root + `/a"`},
		{"component", func() error { return ValidComponent("..") },
			`paths: component "..": "." or ".." component`},
		{"parse id", func() error { _, err := ParseID("Qm0"); return err },
			`paths: parse id "Qm0": not a principal ID: invalid base58 character '0' at 2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err().Error(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name  string
		root  ID
		comps []string
		want  string
		err   error
		index int
	}{
		{"root path", idEd25519, nil, root, nil, 0},
		{"components", idEd25519, []string{"laptop", "docs"}, root + "/laptop/docs", nil, 0},
		{"RSA root", idRSA, []string{"a"}, "/" + idRSA + "/a", nil, 0},
		{"unchecked bad root", ID("nope"), []string{"a"}, "", ErrBadRoot, 1},
		{"empty root", ID(""), nil, "", ErrBadRoot, 1},
		{"CIDv1 root", ID(cidEd25519), nil, "", ErrBadRoot, 1},
		{"empty component", idEd25519, []string{"a", ""}, "", ErrEmptyComponent, 3},
		{"slash", idEd25519, []string{"a/b"}, "", ErrSlash, 2},
		{"trailing slash", idEd25519, []string{"a/"}, "", ErrSlash, 2},
		{"dot dot", idEd25519, []string{"a", "b", ".."}, "", ErrDotComponent, 4},
		{"star", idEd25519, []string{"*"}, "", ErrReservedComponent, 2},
		{"NUL", idEd25519, []string{"\x00"}, "", ErrNUL, 2},
		{"invalid UTF-8", idEd25519, []string{"\x80"}, "", ErrInvalidUTF8, 2},
		{"256 bytes", idEd25519, []string{strings.Repeat("a", 256)}, "", ErrComponentTooLong, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.root, tc.comps...)
			if !errors.Is(err, tc.err) {
				t.Fatalf("New(%q, %q) = %v, %v; want error %v", tc.root, tc.comps, p, err, tc.err)
			}
			if err != nil {
				var e *Error
				if !errors.As(err, &e) || e.Op != "new" || e.Index != tc.index {
					t.Fatalf("error %#v: want Op \"new\", Index %d", err, tc.index)
				}
				return
			}
			if p.String() != tc.want {
				t.Fatalf("New = %q, want %q", p, tc.want)
			}
			if q := MustParse(tc.want); q != p {
				t.Fatalf("New = %v, Parse = %v: not ==", p, q)
			}
		})
	}
	t.Run("4096 bytes", func(t *testing.T) {
		s := longPath(t, MaxPathLen)
		p, err := New(idEd25519, MustParse(s).Components()...)
		if err != nil || p.String() != s {
			t.Fatalf("New = %v, %v", p, err)
		}
	})
	t.Run("4097 bytes", func(t *testing.T) {
		s := longPath(t, MaxPathLen+1)
		_, err := New(idEd25519, strings.Split(s[len(root)+1:], "/")...)
		if !errors.Is(err, ErrPathTooLong) {
			t.Fatalf("New error = %v, want ErrPathTooLong", err)
		}
		var e *Error
		if errors.As(err, &e) && !strings.HasSuffix(e.Input, "...") {
			t.Errorf("Input %q not truncated", e.Input)
		}
	})
}

func TestJoin(t *testing.T) {
	base := MustParse(root + "/a")
	for _, tc := range []struct {
		name  string
		base  Path
		comps []string
		want  string
		err   error
		index int
	}{
		{"none", base, nil, root + "/a", nil, 0},
		{"one", base, []string{"b"}, root + "/a/b", nil, 0},
		{"two", base, []string{"b", "c"}, root + "/a/b/c", nil, 0},
		{"to root", base.RootPath(), []string{"x"}, root + "/x", nil, 0},
		{"slash is not a separator", base, []string{"b/c"}, "", ErrSlash, 3},
		{"second bad", base, []string{"b", "."}, "", ErrDotComponent, 4},
		{"ellipsis", base, []string{"..."}, "", ErrReservedComponent, 3},
		{"empty", base, []string{""}, "", ErrEmptyComponent, 3},
		{"zero base", Path{}, []string{"a"}, "", ErrEmpty, 0},
		{"zero base no components", Path{}, nil, "", ErrEmpty, 0},
		{"too long", MustParse(longPath(t, MaxPathLen-2)), []string{"ab"}, "", ErrPathTooLong, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.base.Join(tc.comps...)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Join(%q) = %v, %v; want error %v", tc.comps, p, err, tc.err)
			}
			if err != nil {
				var e *Error
				if !errors.As(err, &e) || e.Op != "join" || e.Index != tc.index {
					t.Fatalf("error %#v: want Op \"join\", Index %d", err, tc.index)
				}
				return
			}
			if p != MustParse(tc.want) {
				t.Fatalf("Join = %q, want %q", p, tc.want)
			}
		})
	}
	t.Run("exactly 4096", func(t *testing.T) {
		p, err := MustParse(longPath(t, MaxPathLen-2)).Join("a")
		if err != nil || len(p.String()) != MaxPathLen {
			t.Fatalf("Join = %v (%d bytes), %v", p, len(p.String()), err)
		}
	})
}

func TestAccessors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		p      Path
		root   ID
		rp     string
		comps  []string
		depth  int
		base   string
		parent string // "" for none
	}{
		{"root path", MustParse(root), idEd25519, root, nil, 0, idEd25519, ""},
		{"one", MustParse(root + "/a"), idEd25519, root, []string{"a"}, 1, "a", root},
		{"three", MustParse("/" + idRSA + "/a/bb/ccc"), idRSA, "/" + idRSA, []string{"a", "bb", "ccc"}, 3, "ccc", "/" + idRSA + "/a/bb"},
		{"UTF-8", MustParse(root + "/日本/語"), idEd25519, root, []string{"日本", "語"}, 2, "語", root + "/日本"},
		{"zero", Path{}, "", "", nil, 0, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Root(); got != tc.root {
				t.Errorf("Root() = %q, want %q", got, tc.root)
			}
			if got := tc.p.RootPath().String(); got != tc.rp {
				t.Errorf("RootPath() = %q, want %q", got, tc.rp)
			}
			if got := tc.p.Components(); !slices.Equal(got, tc.comps) {
				t.Errorf("Components() = %q, want %q", got, tc.comps)
			}
			if got := tc.p.Depth(); got != tc.depth {
				t.Errorf("Depth() = %d, want %d", got, tc.depth)
			}
			if got := tc.p.Base(); got != tc.base {
				t.Errorf("Base() = %q, want %q", got, tc.base)
			}
			par, ok := tc.p.Parent()
			if ok != (tc.parent != "") || par.String() != tc.parent {
				t.Errorf("Parent() = %q, %v; want %q", par, ok, tc.parent)
			}
			if tc.p.IsZero() {
				return
			}
			// Components rebuild the path, and the slice is the caller's.
			if q, err := New(tc.p.Root(), tc.p.Components()...); err != nil || q != tc.p {
				t.Errorf("New(Root(), Components()...) = %v, %v", q, err)
			}
			if c := tc.p.Components(); len(c) > 0 {
				c[0] = "changed"
				if tc.p.Components()[0] == "changed" {
					t.Error("Components() shares its slice")
				}
			}
		})
	}
}

func TestHasPrefix(t *testing.T) {
	p := func(s string) Path { return MustParse(root + s) }
	other := MustParse("/" + idRSA + "/a")
	for _, tc := range []struct {
		name       string
		p, q       Path
		hasPrefix  bool
		isAncestor bool // q.IsAncestorOf(p)
	}{
		{"same", p("/a/b"), p("/a/b"), true, false},
		{"parent", p("/a/b"), p("/a"), true, true},
		{"root", p("/a/b"), p(""), true, true},
		{"root of root", p(""), p(""), true, false},
		{"child is not a prefix", p("/a"), p("/a/b"), false, false},
		{"string prefix is not a path prefix", p("/ab"), p("/a"), false, false},
		{"string prefix deeper", p("/a/bc/d"), p("/a/b"), false, false},
		{"sibling", p("/a/c"), p("/a/b"), false, false},
		{"other root", p("/a"), other.RootPath(), false, false},
		{"other root same components", p("/a"), other, false, false},
		{"zero prefix", p("/a"), Path{}, false, false},
		{"zero path", Path{}, p(""), false, false},
		{"both zero", Path{}, Path{}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.HasPrefix(tc.q); got != tc.hasPrefix {
				t.Errorf("%v.HasPrefix(%v) = %v, want %v", tc.p, tc.q, got, tc.hasPrefix)
			}
			if got := tc.q.IsAncestorOf(tc.p); got != tc.isAncestor {
				t.Errorf("%v.IsAncestorOf(%v) = %v, want %v", tc.q, tc.p, got, tc.isAncestor)
			}
		})
	}
}

func TestRel(t *testing.T) {
	p := func(s string) Path { return MustParse(root + s) }
	for _, tc := range []struct {
		name       string
		base, desc Path
		want       []string
		err        error
	}{
		{"itself", p("/a"), p("/a"), nil, nil},
		{"root itself", p(""), p(""), nil, nil},
		{"child", p("/a"), p("/a/b"), []string{"b"}, nil},
		{"grandchild", p("/a"), p("/a/b/c"), []string{"b", "c"}, nil},
		{"from root", p(""), p("/a/b"), []string{"a", "b"}, nil},
		{"parent", p("/a/b"), p("/a"), nil, ErrNotUnder},
		{"sibling", p("/a"), p("/b"), nil, ErrNotUnder},
		{"string prefix", p("/a"), p("/ab"), nil, ErrNotUnder},
		{"other root", p("/a"), MustParse("/" + idRSA + "/a/b"), nil, ErrNotUnder},
		{"zero base", Path{}, p("/a"), nil, ErrNotUnder},
		{"zero desc", p("/a"), Path{}, nil, ErrNotUnder},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.base.Rel(tc.desc)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Rel = %q, %v; want error %v", got, err, tc.err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Rel = %q, want %q", got, tc.want)
			}
			if err == nil {
				if j, err := tc.base.Join(got...); err != nil || j != tc.desc {
					t.Errorf("Join(Rel) = %v, %v; want %v", j, err, tc.desc)
				}
			}
		})
	}
}

func TestValidComponent(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		err  error
	}{
		{"plain", "report.txt", nil},
		{"UTF-8", "Grüße", nil},
		{"control", "\x1b[0m", nil},
		{"dot prefix", ".a", nil},
		{"four dots", "....", nil},
		{"star in name", "a*", nil},
		{"255 bytes", strings.Repeat("a", 255), nil},
		{"empty", "", ErrEmptyComponent},
		{"256 bytes", strings.Repeat("a", 256), ErrComponentTooLong},
		{"256 bytes with slash", strings.Repeat("/", 256), ErrComponentTooLong},
		{"slash", "a/b", ErrSlash},
		{"only slash", "/", ErrSlash},
		{"slash and NUL", "/\x00", ErrSlash},
		{"NUL", "\x00", ErrNUL},
		{"NUL and bad UTF-8", "\xff\x00", ErrNUL},
		{"bad UTF-8", "a\xffb", ErrInvalidUTF8},
		{"dot", ".", ErrDotComponent},
		{"dot dot", "..", ErrDotComponent},
		{"star", "*", ErrReservedComponent},
		{"ellipsis", "...", ErrReservedComponent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidComponent(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("ValidComponent(%q) = %v, want %v", tc.in, err, tc.err)
			}
			if err == nil {
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Op != "component" || e.Index != 0 {
				t.Fatalf("error %#v: want Op \"component\", Index 0", err)
			}
			// Parse agrees: the same component in a path fails the same way
			// (except for '/', which Parse reads as a separator).
			if !strings.Contains(tc.in, "/") {
				if _, perr := Parse(root + "/" + tc.in); !errors.Is(perr, tc.err) {
					t.Errorf("Parse with component %q = %v, want %v", tc.in, perr, tc.err)
				}
			}
		})
	}
}

func TestErrorInputTruncated(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"ASCII", root + "/" + strings.Repeat("a", 300) + "/."},
		{"UTF-8 cut mid-rune", root + "/" + strings.Repeat("é", 200) + "/."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.in)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse error = %v", err)
			}
			if len(e.Input) > maxErrInput+3 || !strings.HasSuffix(e.Input, "...") ||
				!strings.HasPrefix(tc.in, strings.TrimSuffix(e.Input, "...")) {
				t.Fatalf("Input = %q (%d bytes), want a prefix cut to %d bytes plus \"...\"", e.Input, len(e.Input), maxErrInput)
			}
			if !strings.Contains(err.Error(), strconv.Quote(e.Input)) {
				t.Fatalf("message %q does not quote Input", err)
			}
		})
	}
}

func TestPathText(t *testing.T) {
	type doc struct {
		P    Path `json:"p"`
		Opt  Path `json:"opt,omitzero"`
		Zero Path `json:"zero"`
	}
	t.Run("round trip", func(t *testing.T) {
		in := doc{P: MustParse(root + "/a/日本")}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"p":"` + root + `/a/日本","zero":""}`; string(b) != want {
			t.Fatalf("Marshal = %s, want %s", b, want)
		}
		var out doc
		if err := json.Unmarshal(b, &out); err != nil || out != in {
			t.Fatalf("Unmarshal = %+v, %v; want %+v", out, err, in)
		}
	})
	for _, tc := range []struct {
		name string
		text string
		err  error
	}{
		{"trailing slash", root + "/a/", ErrEmptyComponent},
		{"bare slash", "/", ErrBareSlash},
		{"NUL", root + "/\x00", ErrNUL},
		{"relative", "a", ErrNotAbsolute},
	} {
		t.Run("invalid/"+tc.name, func(t *testing.T) {
			p := MustParse(root + "/keep")
			err := p.UnmarshalText([]byte(tc.text))
			if !errors.Is(err, tc.err) {
				t.Fatalf("UnmarshalText(%q) = %v, want %v", tc.text, err, tc.err)
			}
			var e *Error
			if !errors.As(err, &e) || e.Op != "unmarshal" {
				t.Fatalf("error %#v: want Op \"unmarshal\"", err)
			}
			if p != MustParse(root+"/keep") {
				t.Fatalf("failed UnmarshalText changed p to %v", p)
			}
		})
	}
	t.Run("empty is zero", func(t *testing.T) {
		p := MustParse(root)
		if err := p.UnmarshalText(nil); err != nil || !p.IsZero() {
			t.Fatalf("UnmarshalText(empty) = %v, %v", p, err)
		}
	})
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("MustParse did not panic")
		} else if err, ok := r.(error); !ok || !errors.Is(err, ErrBareSlash) {
			t.Fatalf("panic value %v", r)
		}
	}()
	MustParse("/")
}

func TestMapKey(t *testing.T) {
	m := map[Path]int{MustParse(root + "/a"): 1}
	p, _ := MustParse(root).Join("a")
	if m[p] != 1 {
		t.Fatal("a Path built by Join is not the same map key as the parsed one")
	}
}

func TestAllocs(t *testing.T) {
	s := root + "/laptop/docs/2024/q1/report.txt"
	p := MustParse(s)
	pre := MustParse(root + "/laptop/docs")
	pt := MustParsePattern("/*/laptop/*/2024/...")
	for _, tc := range []struct {
		name string
		max  float64
		f    func()
	}{
		{"Parse", 0, func() { _, _ = Parse(s) }},
		{"ParseID", 0, func() { _, _ = ParseID(idEd25519) }},
		{"ParsePattern", 0, func() { _, _ = ParsePattern("/*/laptop/*/2024/...") }},
		{"HasPrefix", 0, func() { _ = p.HasPrefix(pre) }},
		{"IsAncestorOf", 0, func() { _ = pre.IsAncestorOf(p) }},
		{"Match", 0, func() { _ = pt.Match(p) }},
		{"Prefix", 0, func() { _ = pt.Prefix() }},
		{"Parent", 0, func() { _, _ = p.Parent() }},
		{"Root", 0, func() { _ = p.Root() }},
		{"Depth", 0, func() { _ = p.Depth() }},
		{"Components", 1, func() { _ = p.Components() }},
		{"Join", 1, func() { _, _ = pre.Join("x", "y") }},
		{"New", 1, func() { _, _ = New(idEd25519, "a", "b") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tc.f); n > tc.max {
				t.Errorf("%s: %v allocations, want at most %v", tc.name, n, tc.max)
			}
		})
	}
}

// TestNoDependencies keeps the package free of imports outside the
// standard library (DESIGN: "paths/ … no dependencies"), so in particular
// it never imports go-libp2p. Tests may import what they like.
func TestNoDependencies(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %q, outside the standard library", name, path)
			}
		}
	}
}

// FuzzParse checks that Parse never panics, that every accepted input is
// already canonical (it round-trips byte for byte), that accepted paths
// rebuild from their parts, and that refusals are *Errors.
func FuzzParse(f *testing.F) {
	for _, s := range []string{root, root + "/a/b", "/", "", root + "//a", root + "/a/", "/x//y", root + "/\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Err == nil || !p.IsZero() {
				t.Fatalf("Parse(%q) = %v, %#v", s, p, err)
			}
			return
		}
		if p.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, p)
		}
		if q, err := Parse(p.String()); err != nil || q != p {
			t.Fatalf("Parse(Parse(%q).String()) = %v, %v", s, q, err)
		}
		if q, err := New(p.Root(), p.Components()...); err != nil || q != p {
			t.Fatalf("New(parts of %q) = %v, %v", s, q, err)
		}
		if _, err := ParseID(p.Root().String()); err != nil {
			t.Fatalf("root of %q: %v", s, err)
		}
		if !p.HasPrefix(p.RootPath()) || p.Depth() != len(p.Components()) {
			t.Fatalf("%q: inconsistent root or depth", s)
		}
		if par, ok := p.Parent(); ok {
			if !par.IsAncestorOf(p) || par.Depth() != p.Depth()-1 {
				t.Fatalf("%q: bad parent %q", s, par)
			}
			if rel, err := par.Rel(p); err != nil || len(rel) != 1 || rel[0] != p.Base() {
				t.Fatalf("%q: Rel from parent = %q, %v", s, rel, err)
			}
		} else if p.Depth() != 0 {
			t.Fatalf("%q: no parent at depth %d", s, p.Depth())
		}
		for _, c := range p.Components() {
			if err := ValidComponent(c); err != nil {
				t.Fatalf("%q: component %q: %v", s, c, err)
			}
		}
		if pt, err := ParsePattern(s); err != nil || !pt.IsLiteral() || !pt.Match(p) || pt.Prefix() != p {
			t.Fatalf("%q as a pattern: %v, %v", s, pt, err)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	s := root + "/laptop/docs/2024/q1/report.txt"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHasPrefix(b *testing.B) {
	p := MustParse(root + "/laptop/docs/2024/q1/report.txt")
	q := MustParse(root + "/laptop/docs")
	b.ReportAllocs()
	for b.Loop() {
		if !p.HasPrefix(q) {
			b.Fatal("no prefix")
		}
	}
}

// TestDocsListEverySentinel keeps docs/paths.md in step with the code: each
// sentinel appears in its error table, by name and with its exact message.
func TestDocsListEverySentinel(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "paths.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"ErrEmpty", ErrEmpty}, {"ErrBareSlash", ErrBareSlash}, {"ErrNotAbsolute", ErrNotAbsolute},
		{"ErrBadRoot", ErrBadRoot}, {"ErrEmptyComponent", ErrEmptyComponent},
		{"ErrDotComponent", ErrDotComponent}, {"ErrReservedComponent", ErrReservedComponent},
		{"ErrSlash", ErrSlash}, {"ErrNUL", ErrNUL}, {"ErrInvalidUTF8", ErrInvalidUTF8},
		{"ErrComponentTooLong", ErrComponentTooLong}, {"ErrPathTooLong", ErrPathTooLong},
		{"ErrNotUnder", ErrNotUnder}, {"ErrBadID", ErrBadID}, {"ErrBadPattern", ErrBadPattern},
	} {
		t.Run(tc.name, func(t *testing.T) {
			row := "| `" + tc.name + "` | " + tc.err.Error() + " |"
			if !strings.Contains(string(doc), row) {
				t.Errorf("docs/paths.md has no row starting %q", row)
			}
		})
	}
}

func TestAncestor(t *testing.T) {
	p := MustParse(root + "/a/b/c")
	for depth, want := range []string{root, root + "/a", root + "/a/b", root + "/a/b/c", root + "/a/b/c"} {
		got, ok := p.Ancestor(depth)
		if !ok || got.String() != want {
			t.Errorf("Ancestor(%d) = %q, %v; want %q", depth, got, ok, want)
		}
		if depth <= p.Depth() && got.Depth() != depth {
			t.Errorf("Ancestor(%d) has depth %d", depth, got.Depth())
		}
	}
	if _, ok := p.Ancestor(-1); ok {
		t.Error("Ancestor(-1) succeeded")
	}
	if _, ok := (Path{}).Ancestor(1); ok {
		t.Error("Ancestor of the zero Path succeeded")
	}
	root := MustParse(root)
	if got, ok := root.Ancestor(1); !ok || got != root {
		t.Errorf("a root path's Ancestor(1) = %q, %v", got, ok)
	}
}
