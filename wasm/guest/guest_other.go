//go:build !wasip1

package guest

import (
	"time"

	"blocktree.dev/bt/paths"
)

// On other targets the package compiles (so that tools see one API) and
// every host call fails with ErrNotWasm.

// Send sends payload to the actor at to, fire and forget.
func Send(to paths.Path, payload []byte) error { return ErrNotWasm }

// Call sends payload to the actor at to and waits up to timeout
// (DefaultCallTimeout when 0) for its reply.
func Call(to paths.Path, payload []byte, timeout time.Duration) ([]byte, error) {
	return nil, ErrNotWasm
}

// Publish publishes payload on the topic.
func Publish(topic paths.Path, payload []byte) error { return ErrNotWasm }

// Subscribe subscribes the module to the topics pattern matches; each
// publication reaches the Handler as a KindPublication message.
func Subscribe(pattern paths.Pattern) error { return ErrNotWasm }

// ReadFile reads the whole file at p.
func ReadFile(p paths.Path) ([]byte, error) { return nil, ErrNotWasm }

// WriteFile replaces the file at p (creating it, not its directory) with
// data, durably.
func WriteFile(p paths.Path, data []byte) error { return ErrNotWasm }

// Log writes a line to the module's log at the given level
// ("debug", "info", "warn", "error").
func Log(level, msg string) {}

// Self returns the module's actor path (from the BT_SELF environment
// variable the host sets).
func Self() paths.Path { return paths.Path{} }
