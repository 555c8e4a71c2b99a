// Command echo is an integration-test module: it answers every call with
// its payload.
package main

import "blocktree.dev/bt/wasm/guest"

func init() {
	guest.Handle(func(m *guest.Message) ([]byte, error) { return m.Payload, nil })
}

func main() {}
