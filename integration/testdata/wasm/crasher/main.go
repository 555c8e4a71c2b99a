// Command crasher is an integration-test module that crashes as it
// starts: it says so on stderr and panics in init, so every instance
// fails and its restart policy runs.
package main

import (
	"fmt"
	"os"

	"blocktree.dev/bt/wasm/guest"
)

func init() {
	fmt.Fprintln(os.Stderr, "crasher: starting, about to crash")
	guest.Handle(func(m *guest.Message) ([]byte, error) { return nil, nil })
	panic("crasher: deliberate crash")
}

func main() {}
