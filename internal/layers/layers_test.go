package layers

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "blocktree.dev/bt"

// layers is the order of Blocktree's packages, lowest first. Each entry
// names a package and, with it, every package below its directory, unless
// a longer entry names one of those itself. Packages of one layer may
// import each other; a package may import nothing of a higher layer.
var layers = [][]string{
	// Path syntax and the helpers that import nothing from Blocktree.
	{"paths", "internal/canon", "internal/atomicfile", "internal/benchcmp", "internal/fsbench",
		"internal/groupcommit", "internal/supervise", "internal/frame", "internal/lifecycle"},
	// Key custody: the contract, its implementations and conformance suite.
	{"tpm"},
	// Writecaps, readcaps, host certificates; nettest makes test identities.
	{"caps", "internal/nettest"},
	// The libp2p host, authenticated connections, the DHT.
	{"p2p"},
	// Encrypted blocks, their stores, exchange and replication.
	{"blocks"},
	// Messages, pub-sub, and the actor runtime built on both.
	{"msg", "pubsub", "actors"},
	// The encrypted file system, its hosts and network protocol.
	{"fsys"},
	// The FUSE adapter.
	{"fuse"},
	// Wasm modules run as actors.
	{"wasm"},
	// The node's directory and the join protocol: used by the daemon and CLI.
	{"repo", "invite"},
	// The node's services that combine the layers below with the repo:
	// hosting volumes, serving them and mounting them.
	{"fsys/service"},
	// The daemon's local API contract.
	{"api"},
	// The local API's server: the handlers over the node's components.
	{"apiserver"},
	// The running node: wires everything above.
	{"daemon"},
	// The CLI.
	{"cmd"},
	// Tests over the whole tree.
	{"integration", "internal/layers"},
}

// listed is what `go list -json` says of one package.
type listed struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Error        *struct{ Err string }
}

// goList lists every package of the module with its dependencies, under
// the given extra environment (GOOS/GOARCH for code behind build tags).
func goList(t *testing.T, env []string, patterns ...string) []listed {
	t.Helper()
	args := append([]string{"list", "-e", "-deps", "-json=ImportPath,Imports,TestImports,XTestImports,Error"}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []listed
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Errorf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		if local(p.ImportPath) != "" {
			pkgs = append(pkgs, p)
		}
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no package of the module")
	}
	return pkgs
}

// local returns path relative to the module, or "" for a package outside it.
func local(path string) string {
	rest, ok := strings.CutPrefix(path, module+"/")
	if !ok {
		return ""
	}
	return rest
}

// under reports whether p is dir or a package below it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// layerOf returns the layer of a package path relative to the module, by
// the longest entry that names it or a directory above it, or -1.
func layerOf(p string) int {
	best, bestLen := -1, -1
	for i, layer := range layers {
		for _, e := range layer {
			if under(p, e) && len(e) > bestLen {
				best, bestLen = i, len(e)
			}
		}
	}
	return best
}

func TestLayers(t *testing.T) {
	pkgs := goList(t, nil, module+"/...")
	// The guest library's host calls build only for wasip1.
	pkgs = append(pkgs, goList(t, []string{"GOOS=wasip1", "GOARCH=wasm"}, module+"/wasm/guest/...")...)
	for _, p := range pkgs {
		self := local(p.ImportPath)
		rank := layerOf(self)
		if rank < 0 {
			t.Errorf("%s is in no layer: add it to layers in internal/layers/layers_test.go", self)
			continue
		}
		check := func(imports []string, test bool) {
			for _, imp := range imports {
				dep := local(imp)
				if dep == "" || dep == self {
					continue
				}
				what := "imports"
				if test {
					what = "tests import"
				}
				switch r := layerOf(dep); {
				case r < 0:
					// Reported when dep itself is checked.
				case r > rank:
					t.Errorf("%s (layer %d, %s) %s %s (layer %d, %s): a lower layer must not import a higher one",
						self, rank, layers[rank][0], what, dep, r, layers[r][0])
				case rank == 0 && !test:
					t.Errorf("%s imports %s: the bottom layer imports nothing from Blocktree", self, dep)
				case under(dep, self) && !test:
					t.Errorf("%s imports %s: a package must not import its own implementations (packages below it)", self, dep)
				}
			}
		}
		check(p.Imports, false)
		check(p.TestImports, true)
		check(p.XTestImports, true)
	}
}

// TestLayerOf pins down the lookup the rules rest on.
func TestLayerOf(t *testing.T) {
	for _, tc := range []struct {
		pkg  string
		want string // first entry of the expected layer; "" for none
	}{
		{"paths", "paths"},
		{"internal/canon", "paths"},
		{"internal/nettest", "caps"},
		{"internal/layers", "integration"},
		{"internal/new", ""},
		{"tpm/softkey", "tpm"},
		{"blocks/leveldb", "blocks"},
		{"actors", "msg"},
		{"fsys/host", "fsys"},
		{"apiserver", "apiserver"},
		{"api/serve", "api"},
		{"cmd/bt", "cmd"},
		{"pathsx", ""},
	} {
		t.Run(strings.ReplaceAll(tc.pkg, "/", "_"), func(t *testing.T) {
			got := ""
			if r := layerOf(tc.pkg); r >= 0 {
				got = layers[r][0]
			}
			if got != tc.want {
				t.Errorf("layerOf(%q) is the layer of %q, want %q", tc.pkg, got, tc.want)
			}
		})
	}
}

// contracts lists packages that define a contract other layers build on and
// that may import no more of Blocktree than the packages named here, so a
// client of the contract pulls in nothing else.
var contracts = map[string][]string{
	"api":   {"paths"},
	"paths": {},
}

func TestContractImports(t *testing.T) {
	for pkg, allowed := range contracts {
		for _, p := range goList(t, nil, module+"/"+pkg) {
			if local(p.ImportPath) != pkg {
				continue
			}
			for _, imp := range p.Imports {
				dep := local(imp)
				if dep != "" && !slices.Contains(allowed, dep) {
					t.Errorf("%s imports %s: a contract imports only the standard library and %v", pkg, dep, allowed)
				}
			}
		}
	}
}
