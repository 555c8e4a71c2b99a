package deploy

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/wasm"
)

// MessageBridge makes an instance name reachable by messaging (`bt send`,
// `bt call`, msg.Router from any node): an endpoint at its actor path
// that hands each message's payload to the actor, a call's reply back.
// The function it returns, given an instance name, returns the
// endpoint's remover, nil when it cannot register one (Config.Expose).
func MessageBridge(node paths.Path, router *msg.Router, act *actors.Runtime, rt *wasm.Runtime, log *slog.Logger) func(name string) func() {
	return func(name string) func() { return bridge(node, router, act, rt, log, name) }
}

func bridge(node paths.Path, router *msg.Router, act *actors.Runtime, rt *wasm.Runtime, log *slog.Logger, name string) func() {
	p, err := node.Join(name)
	if err != nil {
		return nil
	}
	remove, err := router.Handle(p, func(ctx context.Context, m *msg.Message) ([]byte, error) {
		if m.Size > wasm.MaxMessage {
			return nil, fmt.Errorf("%d-byte message, over the module's %d-byte limit", m.Size, wasm.MaxMessage)
		}
		payload, err := io.ReadAll(io.LimitReader(m.Body, wasm.MaxMessage+1))
		if err != nil {
			return nil, err
		}
		if in, ok := rt.Instance(name); !ok || in.State != wasm.StateRunning {
			why := "stopped"
			if ok {
				why = in.State
				if in.LastError != "" {
					why += ": " + in.LastError
				}
			}
			return nil, fmt.Errorf("module %s is not running (%s; `bt ps` and `bt logs %s` on %s say more)", name, why, name, node)
		}
		if !m.Call {
			return nil, act.Send(ctx, p, payload)
		}
		reply, err := act.Call(ctx, p, payload)
		if err != nil {
			return nil, err
		}
		switch r := reply.(type) {
		case []byte:
			return r, nil
		case string:
			return []byte(r), nil
		case nil:
			return nil, nil
		}
		return nil, fmt.Errorf("the module answered a %T", reply)
	})
	if err != nil {
		log.Warn("module not reachable by messaging", "name", name, "path", p, "err", err)
		return nil
	}
	return remove
}
