// Command memhog is a test module: every call allocates and keeps 8 MiB
// more, so it soon exceeds any memory limit.
package main

import "blocktree.dev/bt/wasm/guest"

var hoard [][]byte

func init() {
	guest.Handle(func(m *guest.Message) ([]byte, error) {
		for range 64 {
			b := make([]byte, 8<<20)
			for i := range b {
				b[i] = 1
			}
			hoard = append(hoard, b)
		}
		return []byte("survived"), nil
	})
}

func main() {}
