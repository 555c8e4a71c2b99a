// Command writer is an integration-test module: a call with payload
// "PATH\nDATA" writes DATA to the file at PATH and answers "ok"; a write
// the host refuses is logged at level error and answered "error: …".
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
		if err == nil {
			err = guest.WriteFile(p, data)
		}
		if err != nil {
			guest.Log("error", "writer: "+err.Error())
			return []byte("error: " + err.Error()), nil
		}
		guest.Log("info", "writer: wrote "+p.String())
		return []byte("ok"), nil
	})
}

func main() {}
