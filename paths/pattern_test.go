package paths

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParsePatternValid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		literal bool
		prefix  string
	}{
		{"literal root", root, true, root},
		{"literal path", root + "/a/b", true, root + "/a/b"},
		{"star", root + "/*", false, root},
		{"star in middle", root + "/a/*/c", false, root + "/a"},
		{"stars", root + "/*/*", false, root},
		{"ellipsis", root + "/a/...", false, root + "/a"},
		{"ellipsis after root", root + "/...", false, root},
		{"star then ellipsis", root + "/a/*/...", false, root + "/a"},
		{"any root", "/*", false, ""},
		{"any root with path", "/*/laptop/docs", false, ""},
		{"everything", "/*/...", false, ""},
		{"star inside name is literal", root + "/a*/*b/**", true, root + "/a*/*b/**"},
		{"four dots literal", root + "/..../.a", true, root + "/..../.a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := ParsePattern(tc.in)
			if err != nil {
				t.Fatalf("ParsePattern(%q): %v", tc.in, err)
			}
			if pt.String() != tc.in {
				t.Errorf("String() = %q", pt)
			}
			if again, err := ParsePattern(pt.String()); err != nil || again != pt {
				t.Errorf("ParsePattern(String()) = %v, %v", again, err)
			}
			if pt.IsLiteral() != tc.literal {
				t.Errorf("IsLiteral() = %v, want %v", pt.IsLiteral(), tc.literal)
			}
			if got := pt.Prefix().String(); got != tc.prefix {
				t.Errorf("Prefix() = %q, want %q", got, tc.prefix)
			}
			if pfx := pt.Prefix(); !pfx.IsZero() {
				if _, err := Parse(pfx.String()); err != nil {
					t.Errorf("Prefix() %q is not a valid path: %v", pfx, err)
				}
			}
		})
	}
}

func TestParsePatternInvalid(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		err   error
		index int
	}{
		{"empty", "", ErrEmpty, 0},
		{"bare slash", "/", ErrBareSlash, 0},
		{"relative", "*/a", ErrNotAbsolute, 0},
		{"ellipsis root", "/...", ErrBadPattern, 1},
		{"ellipsis root with more", "/.../a", ErrBadPattern, 1},
		{"ellipsis in middle", root + "/.../a", ErrBadPattern, 2},
		{"two ellipses", root + "/a/.../...", ErrBadPattern, 3},
		{"ellipsis then trailing slash", root + "/a/.../", ErrBadPattern, 3},
		{"trailing slash", root + "/*/", ErrEmptyComponent, 3},
		{"double slash", "/*//a", ErrEmptyComponent, 2},
		{"bad root", "/x/a", ErrBadRoot, 1},
		{"root double star", "/**/a", ErrBadRoot, 1},
		{"CIDv1 root", "/" + cidEd25519 + "/...", ErrBadRoot, 1},
		{"dot", root + "/a/.", ErrDotComponent, 3},
		{"dot dot", "/*/..", ErrDotComponent, 2},
		{"NUL", root + "/*/\x00", ErrNUL, 3},
		{"invalid UTF-8", root + "/\xfe/...", ErrInvalidUTF8, 2},
		{"256-byte component", root + "/" + strings.Repeat("p", 256) + "/...", ErrComponentTooLong, 2},
		{"4097 bytes", longPath(t, MaxPathLen-3) + "/...", ErrPathTooLong, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := ParsePattern(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("ParsePattern(%q) = %v, %v; want %v", tc.in, pt, err, tc.err)
			}
			var e *Error
			if !errors.As(err, &e) || e.Op != "parse pattern" || e.Index != tc.index {
				t.Fatalf("error %#v: want Op \"parse pattern\", Index %d", err, tc.index)
			}
			if !pt.IsZero() {
				t.Errorf("failed ParsePattern returned non-zero %v", pt)
			}
		})
	}
	t.Run("4096 bytes", func(t *testing.T) {
		s := longPath(t, MaxPathLen-4) + "/..."
		if _, err := ParsePattern(s); err != nil {
			t.Fatalf("ParsePattern(%d bytes): %v", len(s), err)
		}
	})
}

func TestMatch(t *testing.T) {
	other := "/" + idRSA
	for _, tc := range []struct {
		name    string
		pattern string
		path    string
		want    bool
	}{
		{"literal same", root + "/a/b", root + "/a/b", true},
		{"literal other", root + "/a/b", root + "/a/c", false},
		{"literal parent", root + "/a/b", root + "/a", false},
		{"literal child", root + "/a/b", root + "/a/b/c", false},
		{"literal root", root, root, true},
		{"literal root vs child", root, root + "/a", false},
		{"star one", root + "/*", root + "/a", true},
		{"star needs one", root + "/*", root, false},
		{"star only one", root + "/*", root + "/a/b", false},
		{"star middle", root + "/a/*/c", root + "/a/x/c", true},
		{"star middle wrong tail", root + "/a/*/c", root + "/a/x/d", false},
		{"star middle too short", root + "/a/*/c", root + "/a/x", false},
		{"star middle too long", root + "/a/*/c", root + "/a/x/c/d", false},
		{"ellipsis zero", root + "/a/...", root + "/a", true},
		{"ellipsis one", root + "/a/...", root + "/a/b", true},
		{"ellipsis many", root + "/a/...", root + "/a/b/c/d", true},
		{"ellipsis not parent", root + "/a/...", root, false},
		{"ellipsis component-wise", root + "/a/...", root + "/ab", false},
		{"ellipsis component-wise deeper", root + "/a/...", root + "/ab/c", false},
		{"ellipsis sibling", root + "/a/...", root + "/b/a", false},
		{"root ellipsis root", root + "/...", root, true},
		{"root ellipsis deep", root + "/...", root + "/x/y/z", true},
		{"root ellipsis other domain", root + "/...", other + "/x", false},
		{"star ellipsis zero", root + "/a/*/...", root + "/a", false},
		{"star ellipsis one", root + "/a/*/...", root + "/a/b", true},
		{"star ellipsis more", root + "/a/*/...", root + "/a/b/c", true},
		{"any root", "/*", other, true},
		{"any root not child", "/*", other + "/a", false},
		{"any root path", "/*/laptop/docs", other + "/laptop/docs", true},
		{"any root path other", "/*/laptop/docs", other + "/laptop/doc", false},
		{"everything root", "/*/...", root, true},
		{"everything deep", "/*/...", other + "/a/b/c", true},
		{"literal star name", root + "/a*", root + "/a*", true},
		{"literal star name other", root + "/a*", root + "/ab", false},
		{"other domain", root + "/a", other + "/a", false},
		{"UTF-8", root + "/*/日本", root + "/x/日本", true},
		{"bytes not normalised", root + "/\u00e9", root + "/e\u0301", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt := MustParsePattern(tc.pattern)
			p := MustParse(tc.path)
			if got := pt.Match(p); got != tc.want {
				t.Fatalf("%v.Match(%v) = %v, want %v", pt, p, got, tc.want)
			}
			if tc.want && !p.HasPrefix(pt.Prefix()) && !pt.Prefix().IsZero() {
				t.Errorf("match %v is not under Prefix() %v", p, pt.Prefix())
			}
		})
	}
	t.Run("zero", func(t *testing.T) {
		if (Pattern{}).Match(MustParse(root)) || MustParsePattern("/*/...").Match(Path{}) {
			t.Fatal("a zero value matched")
		}
		if (Pattern{}).IsLiteral() || !(Pattern{}).Prefix().IsZero() || (Pattern{}).String() != "" {
			t.Fatal("zero Pattern is not empty")
		}
	})
}

func TestPatternText(t *testing.T) {
	type sub struct {
		P Pattern `json:"p"`
	}
	t.Run("round trip", func(t *testing.T) {
		in := sub{MustParsePattern("/*/a/...")}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out sub
		if err := json.Unmarshal(b, &out); err != nil || out != in {
			t.Fatalf("Unmarshal(%s) = %v, %v", b, out, err)
		}
	})
	t.Run("empty is zero", func(t *testing.T) {
		out := sub{MustParsePattern("/*")}
		if err := json.Unmarshal([]byte(`{"p":""}`), &out); err != nil || !out.P.IsZero() {
			t.Fatalf("Unmarshal empty = %v, %v", out.P, err)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		out := sub{MustParsePattern("/*")}
		err := json.Unmarshal([]byte(`{"p":"/*/.../a"}`), &out)
		if !errors.Is(err, ErrBadPattern) {
			t.Fatalf("Unmarshal error = %v, want ErrBadPattern", err)
		}
		if out.P != MustParsePattern("/*") {
			t.Fatalf("failed Unmarshal changed the pattern to %v", out.P)
		}
	})
	t.Run("MustParsePattern panics", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		MustParsePattern("/.../a")
	})
}

// FuzzParsePattern checks that ParsePattern never panics, that what it
// accepts round-trips byte for byte, and that Prefix and Match agree.
func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"/*/...", root + "/a/*/...", root + "/.../a", "/...", "/*", root} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pt, err := ParsePattern(s)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Err == nil || !pt.IsZero() {
				t.Fatalf("ParsePattern(%q) = %v, %#v", s, pt, err)
			}
			return
		}
		if pt.String() != s {
			t.Fatalf("ParsePattern(%q).String() = %q", s, pt)
		}
		if again, err := ParsePattern(pt.String()); err != nil || again != pt {
			t.Fatalf("ParsePattern again = %v, %v", again, err)
		}
		pfx := pt.Prefix()
		if !pfx.IsZero() {
			if q, err := Parse(pfx.String()); err != nil || q != pfx {
				t.Fatalf("%q: Prefix %q is not a path: %v", s, pfx, err)
			}
		}
		if pt.IsLiteral() != (pfx.String() == s) {
			t.Fatalf("%q: IsLiteral %v but Prefix %q", s, pt.IsLiteral(), pfx)
		}
		if pt.IsLiteral() && !pt.Match(pfx) {
			t.Fatalf("literal %q does not match itself", s)
		}
		if _, err := Parse(s); (err == nil) != pt.IsLiteral() {
			t.Fatalf("%q: Parse error %v but IsLiteral %v", s, err, pt.IsLiteral())
		}
		// An instance made by filling the wildcards matches, and is under
		// Prefix when Prefix is not zero.
		inst := instance(s)
		if len(inst) > MaxPathLen {
			return // a "*" root filled with an ID can outgrow the limit
		}
		p, err := Parse(inst)
		if err != nil {
			t.Fatalf("%q: instance %q: %v", s, inst, err)
		}
		if !pt.Match(p) {
			t.Fatalf("%q does not match its instance %q", s, inst)
		}
		if !pfx.IsZero() && !p.HasPrefix(pfx) {
			t.Fatalf("%q: instance %q not under Prefix %q", s, inst, pfx)
		}
	})
}

// instance fills the wildcards of a valid pattern: "*" as root becomes an
// ID, "*" as a component becomes "x", a last "..." is dropped.
func instance(pattern string) string {
	fields := strings.Split(pattern[1:], "/")
	if fields[0] == "*" {
		fields[0] = idRSA
	}
	for i := 1; i < len(fields); i++ {
		if fields[i] == "*" {
			fields[i] = "x"
		}
	}
	if fields[len(fields)-1] == "..." {
		fields = fields[:len(fields)-1]
	}
	return "/" + strings.Join(fields, "/")
}

func BenchmarkMatch(b *testing.B) {
	p := MustParse(root + "/laptop/docs/2024/q1/report.txt")
	for _, tc := range []struct{ name, pattern string }{
		{"literal", root + "/laptop/docs/2024/q1/report.txt"},
		{"star", "/*/laptop/*/2024/q1/*"},
		{"ellipsis", root + "/laptop/docs/..."},
	} {
		b.Run(tc.name, func(b *testing.B) {
			pt := MustParsePattern(tc.pattern)
			b.ReportAllocs()
			for b.Loop() {
				if !pt.Match(p) {
					b.Fatal("no match")
				}
			}
		})
	}
}
