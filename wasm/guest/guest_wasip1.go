//go:build wasip1

package guest

import (
	"os"
	"time"
	"unsafe"

	"blocktree.dev/bt/paths"
)

// Host functions (docs/wasm.md). Every one returns a status: ≥ 0 is
// success (for call and read_file, the length of the result waiting in
// the host's result slot), < 0 is minus an error Code, with the error text
// in the result slot.

//go:wasmimport blocktree_v1 recv
func hostRecv(buf unsafe.Pointer) int32

//go:wasmimport blocktree_v1 inbox
func hostInbox(p unsafe.Pointer, n uint32) int32

//go:wasmimport blocktree_v1 fail
func hostFail(p unsafe.Pointer, n uint32) int32

//go:wasmimport blocktree_v1 send
func hostSend(to unsafe.Pointer, toLen uint32, p unsafe.Pointer, n uint32) int32

//go:wasmimport blocktree_v1 call
func hostCall(to unsafe.Pointer, toLen uint32, p unsafe.Pointer, n uint32, timeoutNs int64) int32

//go:wasmimport blocktree_v1 publish
func hostPublish(topic unsafe.Pointer, topicLen uint32, p unsafe.Pointer, n uint32) int32

//go:wasmimport blocktree_v1 subscribe
func hostSubscribe(pattern unsafe.Pointer, n uint32) int32

//go:wasmimport blocktree_v1 read_file
func hostReadFile(path unsafe.Pointer, n uint32) int32

//go:wasmimport blocktree_v1 write_file
func hostWriteFile(path unsafe.Pointer, pathLen uint32, p unsafe.Pointer, n uint32) int32

//go:wasmimport blocktree_v1 log
func hostLog(level uint32, p unsafe.Pointer, n uint32) int32

//go:wasmimport blocktree_v1 result_len
func hostResultLen() int32

//go:wasmimport blocktree_v1 take
func hostTake(p unsafe.Pointer, n uint32) int32

// The inbox is where the host writes each message that fits before it
// calls bt_handle; a larger one is fetched with recv into a grown inbox.
const (
	initialInbox = 64 << 10
	maxInbox     = 2 << 20
)

var (
	inbox     []byte
	msg       Message
	lastReply []byte // keeps the reply alive until the host has copied it
)

func setInbox(n int) {
	inbox = make([]byte, n)
	hostInbox(ptr(inbox), uint32(n))
}

func init() { setInbox(initialInbox) }

// btHandle is the entry point the host calls for every message, with the
// lengths of the sender path, the target path and the payload, which the
// host has written to the inbox when they fit. It returns the reply's
// address and length as address<<32 | length, or -1 when the handler
// failed (its text given to the host by fail first).
//
//go:wasmexport bt_handle
func btHandle(kind, senderLen, targetLen, payloadLen uint32) int64 {
	total := int(senderLen) + int(targetLen) + int(payloadLen)
	var buf []byte
	if total <= len(inbox) {
		buf = inbox[:total]
	} else {
		if total <= maxInbox {
			setInbox(max(total, 2*len(inbox)))
			buf = inbox[:total]
		} else {
			buf = make([]byte, total)
		}
		if rc := hostRecv(ptr(buf)); rc < 0 {
			return fail("recv: " + takeError(rc).Msg)
		}
	}
	msg = Message{Kind: Kind(kind), sender: buf[:senderLen], target: buf[senderLen : senderLen+targetLen],
		Payload: buf[senderLen+targetLen:]}
	if handler == nil {
		return fail("no handler: call guest.Handle from an init function")
	}
	reply, err := handler(&msg)
	msg = Message{}
	if err != nil {
		return fail(err.Error())
	}
	lastReply = reply
	if len(reply) == 0 {
		return 0
	}
	return int64(uintptr(unsafe.Pointer(&reply[0])))<<32 | int64(len(reply))
}

func fail(s string) int64 {
	hostFail(sptr(s), uint32(len(s)))
	return -1
}

func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func sptr(s string) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

// take copies the result slot's n bytes.
func take(n int32) []byte {
	b := make([]byte, n)
	if n > 0 {
		hostTake(ptr(b), uint32(n))
	}
	return b
}

func takeError(rc int32) *Error {
	return &Error{Code: Code(-rc), Msg: string(take(hostResultLen()))}
}

func check(op, path string, rc int32) error {
	if rc >= 0 {
		return nil
	}
	e := takeError(rc)
	e.Op, e.Path = op, path
	return e
}

// Send sends payload to the actor at to, fire and forget. It returns once
// the message is queued (or on its way to another node).
func Send(to paths.Path, payload []byte) error {
	s := to.String()
	return check("send", s, hostSend(sptr(s), uint32(len(s)), ptr(payload), uint32(len(payload))))
}

// Call sends payload to the actor at to and waits up to timeout
// (DefaultCallTimeout when 0) for its reply.
func Call(to paths.Path, payload []byte, timeout time.Duration) ([]byte, error) {
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	s := to.String()
	rc := hostCall(sptr(s), uint32(len(s)), ptr(payload), uint32(len(payload)), int64(timeout))
	if err := check("call", s, rc); err != nil {
		return nil, err
	}
	return take(rc), nil
}

// Publish publishes payload on the topic.
func Publish(topic paths.Path, payload []byte) error {
	s := topic.String()
	return check("publish", s, hostPublish(sptr(s), uint32(len(s)), ptr(payload), uint32(len(payload))))
}

// Subscribe subscribes the module to the topics pattern matches; each
// publication reaches the Handler as a KindPublication message. It may be
// called from an init function.
func Subscribe(pattern paths.Pattern) error {
	s := pattern.String()
	return check("subscribe", s, hostSubscribe(sptr(s), uint32(len(s))))
}

// ReadFile reads the whole file at p.
func ReadFile(p paths.Path) ([]byte, error) {
	s := p.String()
	rc := hostReadFile(sptr(s), uint32(len(s)))
	if err := check("read_file", s, rc); err != nil {
		return nil, err
	}
	return take(rc), nil
}

// WriteFile replaces the file at p (creating the file, not its directory)
// with data; it returns once the file system holds it durably.
func WriteFile(p paths.Path, data []byte) error {
	s := p.String()
	return check("write_file", s, hostWriteFile(sptr(s), uint32(len(s)), ptr(data), uint32(len(data))))
}

// Log writes a line to the module's log at level "debug", "info", "warn"
// or "error" (anything else is info). Writing to os.Stdout or os.Stderr
// also reaches the log.
func Log(level, msg string) {
	var l uint32
	switch level {
	case "debug":
		l = 0
	case "warn":
		l = 2
	case "error":
		l = 3
	default:
		l = 1
	}
	hostLog(l, sptr(msg), uint32(len(msg)))
}

// Self returns the module's actor path (from the BT_SELF environment
// variable the host sets).
func Self() paths.Path {
	p, _ := paths.Parse(os.Getenv("BT_SELF"))
	return p
}
