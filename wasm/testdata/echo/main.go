// Command echo is a test module: it replies to every call with its payload.
package main

import "blocktree.dev/bt/wasm/guest"

func init() {
	guest.Handle(func(m *guest.Message) ([]byte, error) { return m.Payload, nil })
}

func main() {}
