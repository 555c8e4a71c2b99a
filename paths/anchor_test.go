package paths

import (
	"path"
	"strings"
	"testing"

	"blocktree.dev/bt/internal/benchcmp"
	"github.com/libp2p/go-libp2p/core/peer"
)

// BenchmarkAnchors compares the hot operations with a named anchor in the
// same run (interleaved rounds, medians) and prints the ratio anchor/ours,
// so >1 means this package is faster. Run with -benchtime=1x:
//
//		go test ./paths -run XXX -bench Anchors -benchtime 1x
//
//	  - Parse of a 5-component path against peer.Decode of its root alone
//	    (go-libp2p's parse of the ID, without any path work);
//	  - HasPrefix against strings.HasPrefix on the same texts;
//	  - Match of "/*/laptop/*/2024/q1/*" against the standard library's
//	    path.Match of the same glob.
func BenchmarkAnchors(b *testing.B) {
	s := root + "/laptop/docs/2024/q1/report.txt"
	p := MustParse(s)
	q := MustParse(root + "/laptop/docs")
	pt := MustParsePattern("/*/laptop/*/2024/q1/*")
	var sink bool
	opts := benchcmp.Options{Rounds: 9, Ops: 20000}
	b.Run("Parse-vs-peer.Decode", func(b *testing.B) {
		benchcmp.Compare(b, "Parse vs peer.Decode(root)", opts,
			func() error { _, err := Parse(s); return err },
			func() error { _, err := peer.Decode(idEd25519); return err })
	})
	b.Run("HasPrefix-vs-strings.HasPrefix", func(b *testing.B) {
		benchcmp.Compare(b, "HasPrefix vs strings.HasPrefix", opts,
			func() error { sink = p.HasPrefix(q); return nil },
			func() error { sink = strings.HasPrefix(p.String(), q.String()); return nil })
	})
	b.Run("Match-vs-path.Match", func(b *testing.B) {
		benchcmp.Compare(b, "Match vs path.Match", opts,
			func() error { sink = pt.Match(p); return nil },
			func() error { var err error; sink, err = path.Match("/*/laptop/*/2024/q1/*", s); return err })
	})
	_ = sink
}
