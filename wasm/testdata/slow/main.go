// Command slow is a test module: a call with payload "spin" loops forever;
// any other payload is echoed.
package main

import "blocktree.dev/bt/wasm/guest"

var sink int

func init() {
	guest.Handle(func(m *guest.Message) ([]byte, error) {
		if string(m.Payload) == "spin" {
			for i := 0; ; i++ {
				sink += i
			}
		}
		return m.Payload, nil
	})
}

func main() {}
