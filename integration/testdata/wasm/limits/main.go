// Command limits is an integration-test module that breaks its limits on
// request: a call with payload "spin" loops forever (past any deadline),
// "hog" allocates 8 MiB at a time until memory runs out; anything else is
// echoed.
package main

import "blocktree.dev/bt/wasm/guest"

var (
	sink  int
	hoard [][]byte
)

func init() {
	guest.Handle(func(m *guest.Message) ([]byte, error) {
		switch string(m.Payload) {
		case "spin":
			for i := 0; ; i++ {
				sink += i
			}
		case "hog":
			for {
				b := make([]byte, 8<<20)
				for i := range b {
					b[i] = 1
				}
				hoard = append(hoard, b)
			}
		}
		return m.Payload, nil
	})
}

func main() {}
