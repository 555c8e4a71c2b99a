package api

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDocsRoutes checks docs/api.md against Routes: every route appears
// with its method, and every endpoint the page names is a route.
func TestDocsRoutes(t *testing.T) {
	doc := readDoc(t, "../docs/api.md")
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("(GET|POST) (/v1/[a-z/]*[a-z])").FindAllStringSubmatch(doc, -1) {
		named[m[1]+" "+m[2]] = true
	}
	var want []string
	for _, r := range Routes {
		p := r.Method + " " + r.Path
		want = append(want, p)
		if !named[p] {
			t.Errorf("docs/api.md does not list %s", p)
		}
	}
	for p := range named {
		if !slices.Contains(want, p) {
			t.Errorf("docs/api.md lists %s, which is no route", p)
		}
	}
}

// TestDocsErrors checks the error table of docs/api.md against Kinds.
func TestDocsErrors(t *testing.T) {
	rows := tableRows(readDoc(t, "../docs/api.md"), "| kind | HTTP | meaning | exit | file exit |")
	if len(rows) != len(Kinds) {
		t.Fatalf("docs/api.md has %d kinds, Kinds %d", len(rows), len(Kinds))
	}
	for i, k := range Kinds {
		want := []string{"`" + string(k.Kind) + "`", strconv.Itoa(k.Status), k.Meaning,
			strconv.Itoa(int(k.Exit)), strconv.Itoa(int(k.FileExit))}
		if !slices.Equal(rows[i], want) {
			t.Errorf("docs/api.md row %d: %q, want %q", i+1, rows[i], want)
		}
	}
}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tableRows returns the cells of the rows of the markdown table whose
// header line is header.
func tableRows(doc, header string) [][]string {
	i := strings.Index(doc, header+"\n")
	if i < 0 {
		return nil
	}
	lines := strings.Split(doc[i:], "\n")[2:]
	var rows [][]string
	for _, l := range lines {
		if !strings.HasPrefix(l, "|") {
			break
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(l, "|"), " | ") {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	return rows
}
