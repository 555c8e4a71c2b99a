// Command writer is a test module: a call with payload "PATH\nDATA" writes
// DATA to the file at PATH and replies "ok" or the error.
package main

import (
	"bytes"

	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/wasm/guest"
)

func init() {
	guest.Handle(func(m *guest.Message) ([]byte, error) {
		path, data, _ := bytes.Cut(m.Payload, []byte("\n"))
		p, err := paths.Parse(string(path))
		if err != nil {
			return []byte("error: " + err.Error()), nil
		}
		if err := guest.WriteFile(p, data); err != nil {
			return []byte("error: " + err.Error()), nil
		}
		guest.Log("info", "wrote "+p.String())
		return []byte("ok"), nil
	})
}

func main() {}
