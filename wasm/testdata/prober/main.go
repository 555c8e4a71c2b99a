// Command prober is a test module: a call with payload "OP PATH" (OP one of
// read, write, send, call, publish, subscribe) tries that host call and
// replies "ok", "ok DATA" or "error CODE: TEXT".
package main

import (
	"errors"
	"fmt"
	"strings"

	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/wasm/guest"
)

func init() {
	guest.Handle(func(m *guest.Message) ([]byte, error) {
		op, arg, _ := strings.Cut(string(m.Payload), " ")
		var out []byte
		var err error
		if op == "subscribe" {
			var pt paths.Pattern
			if pt, err = paths.ParsePattern(arg); err == nil {
				err = guest.Subscribe(pt)
			}
		} else {
			var p paths.Path
			if p, err = paths.Parse(arg); err == nil {
				switch op {
				case "read":
					out, err = guest.ReadFile(p)
				case "write":
					err = guest.WriteFile(p, []byte("probe"))
				case "send":
					err = guest.Send(p, []byte("probe"))
				case "call":
					out, err = guest.Call(p, []byte("probe"), 0)
				case "publish":
					err = guest.Publish(p, []byte("probe"))
				default:
					err = fmt.Errorf("unknown op %q", op)
				}
			}
		}
		var ge *guest.Error
		switch {
		case errors.As(err, &ge):
			return []byte(fmt.Sprintf("error %d: %v", ge.Code, err)), nil
		case err != nil:
			return []byte("error: " + err.Error()), nil
		}
		return append([]byte("ok "), out...), nil
	})
}

func main() {}
