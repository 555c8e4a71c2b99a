package paths_test

import (
	"errors"
	"fmt"

	"blocktree.dev/bt/paths"
)

func Example() {
	// Parse untrusted text once, at the edge.
	p, err := paths.Parse("/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/laptop/docs/report.txt")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("root:", p.Root())
	fmt.Println("components:", p.Components(), "depth:", p.Depth(), "base:", p.Base())

	laptop, _ := p.RootPath().Join("laptop")
	fmt.Println("under laptop:", p.HasPrefix(laptop), laptop.IsAncestorOf(p))
	rel, _ := laptop.Rel(p)
	fmt.Println("relative to laptop:", rel)

	// "/…/lap" is a string prefix of "/…/laptop" but not a path prefix.
	lap, _ := p.RootPath().Join("lap")
	fmt.Println("under lap:", p.HasPrefix(lap))

	// Non-canonical spellings are errors, not cleaned up.
	_, err = paths.Parse(laptop.String() + "//docs")
	fmt.Println(errors.Is(err, paths.ErrEmptyComponent), err)

	// Patterns: "*" is one component, a final "..." is zero or more.
	pt, _ := paths.ParsePattern("/*/laptop/...")
	fmt.Println("match:", pt.Match(p), pt.Match(laptop), pt.Match(lap))

	// Output:
	// root: 12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE
	// components: [laptop docs report.txt] depth: 3 base: report.txt
	// under laptop: true true
	// relative to laptop: [docs report.txt]
	// under lap: false
	// true paths: parse "/12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE/laptop//docs": empty component at 3
	// match: true true false
}

func ExampleParseID() {
	for _, s := range []string{
		"12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE",              // Ed25519, identity multihash
		"QmeEUJMMTHz6P5UwxNRmkpHb79tHun2q6Kczzuqa7FKahU",                    // RSA, sha2-256 multihash
		"bafzaajaiaejcbjd5s5y6jzgo3v545tqv3vt7nemdbwd3f4hjl7foxqppqpix4v4n", // the Ed25519 ID as a CIDv1
	} {
		id, err := paths.ParseID(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println("ok", id)
	}
	// Output:
	// ok 12D3KooWLtU73iz6AW6aEhE3exnD8dGbdUQu5RYpeTkyM4bc1nPE
	// ok QmeEUJMMTHz6P5UwxNRmkpHb79tHun2q6Kczzuqa7FKahU
	// paths: parse id "bafzaajaiaejcbjd5s5y6jzgo3v545tqv3vt7nemdbwd3f4hjl7foxqppqpix4v4n": not a principal ID: CIDv1 form is not accepted (want base58btc: 12D3KooW… or Qm…)
}

func ExamplePattern_Match() {
	p := paths.MustParse("/QmeEUJMMTHz6P5UwxNRmkpHb79tHun2q6Kczzuqa7FKahU/chat/general")
	for _, s := range []string{
		"/QmeEUJMMTHz6P5UwxNRmkpHb79tHun2q6Kczzuqa7FKahU/chat/general",
		"/QmeEUJMMTHz6P5UwxNRmkpHb79tHun2q6Kczzuqa7FKahU/chat/*",
		"/QmeEUJMMTHz6P5UwxNRmkpHb79tHun2q6Kczzuqa7FKahU/chat/general/...",
		"/QmeEUJMMTHz6P5UwxNRmkpHb79tHun2q6Kczzuqa7FKahU/*",
		"/*/...",
	} {
		pt := paths.MustParsePattern(s)
		fmt.Printf("match=%-5v literal=%-5v prefix depth=%d\n", pt.Match(p), pt.IsLiteral(), pt.Prefix().Depth())
	}
	// Output:
	// match=true  literal=true  prefix depth=2
	// match=true  literal=false prefix depth=1
	// match=true  literal=false prefix depth=2
	// match=false literal=false prefix depth=0
	// match=true  literal=false prefix depth=0
}
