// Command crasher is a test module that fails as it starts: it writes a
// line to stderr and panics in its init function, so every instance
// crashes and its restart policy is exercised.
package main

import (
	"fmt"
	"os"

	"blocktree.dev/bt/wasm/guest"
)

func init() {
	fmt.Fprintln(os.Stderr, "crasher starting")
	guest.Handle(func(m *guest.Message) ([]byte, error) { return nil, nil })
	panic("crasher: deliberate crash")
}

func main() {}
