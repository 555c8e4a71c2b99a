package main

import (
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"blocktree.dev/bt/api"
)

func readCLIDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDocsCommands checks docs/cli.md against the command tree: every
// command that runs is in a table of the page, and every command a table
// names exists.
func TestDocsCommands(t *testing.T) {
	doc := readCLIDoc(t)
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `bt ([a-z]+(?: [a-z]+)?)").FindAllStringSubmatch(doc, -1) {
		documented[m[1]] = true
	}
	// `bt grant read|write …` documents grant, whose first argument the
	// pattern took for a subcommand.
	isDocumented := func(name string) bool {
		for d := range documented {
			if d == name || strings.HasPrefix(d, name+" ") {
				return true
			}
		}
		return false
	}
	root := newRoot(io.Discard)
	var walk func(c *cobra.Command)
	seen := map[string]bool{}
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			walk(sub)
		}
		if !c.Runnable() || c == root {
			return
		}
		name := strings.TrimPrefix(c.CommandPath(), "bt ")
		seen[name] = true
		if !isDocumented(name) {
			t.Errorf("docs/cli.md does not document `bt %s`", name)
		}
	}
	walk(root)
	for name := range documented {
		if !seen[name] {
			// A documented group ("bt key export" documents key).
			if c, _, err := root.Find(strings.Fields(name)); err != nil || c == root {
				t.Errorf("docs/cli.md documents `bt %s`, which is no command", name)
			}
		}
	}
}

// TestDocsExitCodes checks the exit-code table of docs/cli.md against
// api.ExitCodes.
func TestDocsExitCodes(t *testing.T) {
	doc := readCLIDoc(t)
	i := strings.Index(doc, "| code | meaning |\n")
	if i < 0 {
		t.Fatal("docs/cli.md has no exit-code table")
	}
	var rows []string
	for _, l := range strings.Split(doc[i:], "\n")[2:] {
		if !strings.HasPrefix(l, "|") {
			break
		}
		rows = append(rows, l)
	}
	if len(rows) != len(api.ExitCodes) {
		t.Fatalf("docs/cli.md lists %d exit codes, api.ExitCodes %d", len(rows), len(api.ExitCodes))
	}
	for i, c := range api.ExitCodes {
		if want := "| " + strconv.Itoa(int(c.Code)) + " | " + c.Meaning + " |"; rows[i] != want {
			t.Errorf("docs/cli.md exit code row %d:\n %s\nwant\n %s", i, rows[i], want)
		}
	}
}
