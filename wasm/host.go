package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
)

// ABI is the import module name of the host functions (docs/wasm.md).
const ABI = "blocktree_v1"

// Kinds passed to bt_handle.
const (
	kindMessage     = 0 // Send or Call: the reply is used for a Call
	kindPublication = 1
)

// Error codes returned (negated) by host functions.
const (
	codeDenied      = 1
	codeNotFound    = 2
	codeBadArgument = 3
	codeTimeout     = 4
	codeTooLarge    = 5
	codeUnavailable = 6
	codeFailed      = 7
)

// wasmProtocol admits the messages a module can take; anything else is
// refused with actors.ErrProtocol before it is queued.
var wasmProtocol = &actors.Protocol{
	Name: "wasm", Initial: "ready",
	States: []actors.State{{Name: "ready", Accept: []actors.Rule{
		actors.On[[]byte, []byte](""),
		actors.On[string, []byte](""),
		actors.On[*pubsub.Message, []byte](""),
	}}},
}

// wasmActor is the actor of one incarnation of a module.
type wasmActor struct {
	in   *instance
	eng  *engine
	code wazero.CompiledModule
	run  *run
}

// run is the host-side state of one module instance; host functions find
// it in their context. Everything but killed is used only on the actor's
// goroutine (host calls run on it, inside Start or Receive).
type run struct {
	in     *instance
	c      *actors.Context
	ctx    context.Context
	cancel context.CancelFunc
	mod    api.Module
	handle api.Function
	stack  []uint64
	timer  *time.Timer
	killed atomic.Pointer[string] // why the runtime killed the instance

	// The guest's inbox (registered by the inbox host call), where the
	// host writes each message that fits before calling bt_handle.
	inboxPtr, inboxCap uint32

	// The message being handled.
	sender, target string
	payload        []byte
	failText       string
	result         []byte // the result slot: a host call's result or error text
}

type runKey struct{}

func (a *wasmActor) Start(c *actors.Context) error {
	in := a.in
	rn := &run{in: in, c: c, stack: make([]uint64, 4)}
	rn.ctx, rn.cancel = context.WithCancel(context.WithValue(c.Ctx(), runKey{}, rn))
	rn.timer = time.AfterFunc(time.Hour, func() {
		why := fmt.Sprintf("handling a message took longer than the deadline of %v: the instance was stopped", in.m.Deadline)
		rn.killed.CompareAndSwap(nil, &why)
		rn.cancel()
	})
	rn.timer.Stop()
	a.run = rn
	in.sawOOM.Store(false)
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions("_initialize").
		WithArgs(in.m.Name).
		WithStdout(in.stdout).WithStderr(in.stderr).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithEnv("BT_SELF", c.Self().String()).
		WithEnv("BT_NODE", in.r.node.String()).
		WithEnv("BT_NAME", in.m.Name)
	for k, v := range in.m.Env {
		cfg = cfg.WithEnv(k, v)
	}
	rn.timer.Reset(in.m.Deadline) // initialisation has the same deadline
	mod, err := a.eng.rt.InstantiateModule(rn.ctx, a.code, cfg)
	rn.timer.Stop()
	if err != nil {
		return rn.explain("start", err)
	}
	rn.mod = mod
	h := mod.ExportedFunction("bt_handle")
	if h == nil {
		mod.Close(context.Background())
		return fmt.Errorf("%w: no bt_handle export: build a reactor (GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared) with blocktree.dev/bt/wasm/guest", ErrModule)
	}
	if d := h.Definition(); len(d.ParamTypes()) != 4 || len(d.ResultTypes()) != 1 || d.ResultTypes()[0] != i64 {
		mod.Close(context.Background())
		return fmt.Errorf("%w: bt_handle has the wrong signature (want (i32, i32, i32, i32) -> i64)", ErrModule)
	}
	rn.handle = h
	in.setState(StateRunning)
	in.note("running at %s", c.Self())
	return nil
}

func (a *wasmActor) Receive(c *actors.Context, m any) (any, error) {
	rn := a.run
	kind := uint64(kindMessage)
	rn.c = c
	switch m := m.(type) {
	case []byte:
		rn.payload = m
		rn.sender, rn.target = c.Sender().String(), c.Self().String()
	case string:
		rn.payload = []byte(m)
		rn.sender, rn.target = c.Sender().String(), c.Self().String()
	case *pubsub.Message:
		kind = kindPublication
		rn.payload = m.Payload
		rn.sender, rn.target = m.From.String(), m.Topic.String()
	default: // the protocol admits nothing else
		return []byte(nil), nil
	}
	rn.failText = ""
	st := rn.stack
	st[0], st[1], st[2], st[3] = kind, uint64(len(rn.sender)), uint64(len(rn.target)), uint64(len(rn.payload))
	if total := uint64(len(rn.sender) + len(rn.target) + len(rn.payload)); total <= uint64(rn.inboxCap) {
		// The message fits the inbox: write it there, sparing the guest a
		// recv call.
		mem, off := rn.mod.Memory(), rn.inboxPtr
		if !mem.WriteString(off, rn.sender) || !mem.WriteString(off+uint32(len(rn.sender)), rn.target) ||
			!mem.Write(off+uint32(len(rn.sender)+len(rn.target)), rn.payload) {
			return nil, fmt.Errorf("wasm: module %s: its inbox lies outside its memory", a.in.m.Name)
		}
	}
	rn.timer.Reset(a.in.m.Deadline)
	err := rn.handle.CallWithStack(rn.ctx, st)
	if !rn.timer.Stop() && err == nil {
		err = errors.New("deadline") // fired as the call returned: the instance is being killed
	}
	rn.payload = nil
	if err != nil {
		return nil, rn.explain("handle", err)
	}
	res := int64(st[0])
	if res < 0 {
		return nil, fmt.Errorf("wasm: module %s: handler failed: %s", a.in.m.Name, rn.failText)
	}
	n := uint32(res)
	if n == 0 {
		return []byte(nil), nil
	}
	if n > MaxMessage {
		return nil, fmt.Errorf("wasm: module %s: reply of %d bytes, more than %d", a.in.m.Name, n, MaxMessage)
	}
	b, ok := rn.mod.Memory().Read(uint32(res>>32), n)
	if !ok {
		return nil, fmt.Errorf("wasm: module %s: reply outside its memory", a.in.m.Name)
	}
	return append([]byte(nil), b...), nil
}

func (a *wasmActor) Stopped(c *actors.Context, e actors.Exit) {
	rn := a.run
	if rn == nil {
		return
	}
	rn.timer.Stop()
	rn.cancel()
	if rn.mod != nil {
		rn.mod.Close(context.Background())
	}
	a.in.stdout.flush()
	a.in.stderr.flush()
}

// explain turns a wazero error into the reason the instance stopped.
func (rn *run) explain(op string, err error) error {
	name := rn.in.m.Name
	if why := rn.killed.Load(); why != nil {
		return fmt.Errorf("wasm: module %s: %s", name, *why)
	}
	if oom := rn.outOfMemory(); oom != "" {
		return fmt.Errorf("wasm: module %s: %s (%s: %v)", name, oom, op, err)
	}
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		switch code := ee.ExitCode(); {
		case code == 0:
			return actors.ErrStop // a clean exit (proc_exit(0))
		case code == sys.ExitCodeContextCanceled:
			return fmt.Errorf("wasm: module %s: stopped while running (%s)", name, op)
		default:
			return fmt.Errorf("wasm: module %s: exited with code %d during %s (see its log)", name, code, op)
		}
	}
	text := err.Error()
	if strings.Contains(text, "memory") && strings.Contains(text, "limit") {
		return fmt.Errorf("%w: module %s does not fit its memory limit of %d bytes: %v", ErrModule, name, rn.in.m.MemoryLimit, err)
	}
	// A trap's text carries the wasm stack trace: keep it in the log, and
	// its first line in the error.
	rn.in.note("%s trapped: %s", op, text)
	first, _, _ := strings.Cut(text, "\n")
	switch {
	case strings.Contains(text, "runtime.gopanic"), strings.Contains(text, "runtime.fatalpanic"):
		return fmt.Errorf("wasm: module %s: panicked during %s (its log has the panic and the stack): %s", name, op, first)
	case strings.Contains(text, "runtime.throw"), strings.Contains(text, "runtime.abort"):
		return fmt.Errorf("wasm: module %s: fatal error during %s (its log has the reason and the stack): %s", name, op, first)
	}
	return fmt.Errorf("wasm: module %s: trapped during %s: %s", name, op, first)
}

// outOfMemory reports the memory limit when the module ran out of it: its
// runtime said so on stderr, or its memory is within 1 MiB of the limit.
func (rn *run) outOfMemory() string {
	limit := uint64(pages(rn.in.m.MemoryLimit)) * 65536
	if rn.in.sawOOM.Load() {
		return fmt.Sprintf("exceeded its memory limit of %d bytes", limit)
	}
	if rn.mod != nil {
		if mem := rn.mod.Memory(); mem != nil && uint64(mem.Size())+1<<20 >= limit {
			return fmt.Sprintf("exceeded its memory limit of %d bytes (memory at %d bytes)", limit, mem.Size())
		}
	}
	return ""
}

// Host functions.

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

func instantiateHost(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(ABI)
	def := func(name string, f func(rn *run, mem api.Memory, st []uint64) int32, params ...api.ValueType) {
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, st []uint64) {
			rn, _ := ctx.Value(runKey{}).(*run)
			for i, t := range params {
				if t == i32 {
					st[i] = uint64(uint32(st[i])) // the upper half of an i32 is not defined
				}
			}
			if rn == nil {
				st[0] = api.EncodeI32(-codeFailed)
				return
			}
			st[0] = api.EncodeI32(f(rn, mod.Memory(), st))
		}), params, []api.ValueType{i32}).Export(name)
	}
	def("recv", hostRecv, i32)
	def("inbox", hostInbox, i32, i32)
	def("fail", hostFail, i32, i32)
	def("send", hostSend, i32, i32, i32, i32)
	def("call", hostCall, i32, i32, i32, i32, i64)
	def("publish", hostPublish, i32, i32, i32, i32)
	def("subscribe", hostSubscribe, i32, i32)
	def("read_file", hostReadFile, i32, i32)
	def("write_file", hostWriteFile, i32, i32, i32, i32)
	def("log", hostLog, i32, i32, i32)
	def("result_len", func(rn *run, _ api.Memory, _ []uint64) int32 { return int32(len(rn.result)) })
	def("take", hostTake, i32, i32)
	_, err := b.Instantiate(ctx)
	return err
}

// read returns a view of guest memory (valid until the guest runs again).
func read(mem api.Memory, ptr, n uint64) ([]byte, bool) {
	if n == 0 {
		return nil, true
	}
	return mem.Read(uint32(ptr), uint32(n))
}

// fail sets the result slot to the error text and returns -code.
func (rn *run) fail(code int32, format string, args ...any) int32 {
	rn.result = fmt.Appendf(rn.result[:0], format, args...)
	return -code
}

func (rn *run) failErr(op string, p fmt.Stringer, err error) int32 {
	code := int32(codeFailed)
	switch {
	case errors.Is(err, actors.ErrNoActor), errors.Is(err, errNotExist):
		code = codeNotFound
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, actors.ErrMailboxFull):
		code = codeTimeout
	case errors.Is(err, msg.ErrDenied), errors.Is(err, errPermission):
		code = codeDenied
	case errors.Is(err, actors.ErrProtocol), errors.Is(err, actors.ErrUnregisteredType):
		code = codeBadArgument
	case errors.Is(err, context.Canceled), errors.Is(err, actors.ErrClosed):
		code = codeUnavailable
	}
	return rn.fail(code, "%s %s: %v", op, p, err)
}

// path reads and parses a path argument.
func (rn *run) path(mem api.Memory, ptr, n uint64) (paths.Path, int32) {
	b, ok := read(mem, ptr, n)
	if !ok || n > 4096 {
		return paths.Path{}, rn.fail(codeBadArgument, "path outside the module's memory or too long")
	}
	p, err := paths.Parse(string(b))
	if err != nil {
		return paths.Path{}, rn.fail(codeBadArgument, "%v", err)
	}
	return p, 0
}

// data copies a payload argument out of guest memory.
func (rn *run) data(mem api.Memory, ptr, n uint64, limit int) ([]byte, int32) {
	if n > uint64(limit) {
		return nil, rn.fail(codeTooLarge, "%d bytes, more than the limit of %d", n, limit)
	}
	b, ok := read(mem, ptr, n)
	if !ok {
		return nil, rn.fail(codeBadArgument, "buffer outside the module's memory")
	}
	return append([]byte(nil), b...), 0
}

// allowed reports whether p lies under one of the granted prefixes.
func allowed(granted []paths.Path, p paths.Path) bool {
	for _, g := range granted {
		if p.HasPrefix(g) {
			return true
		}
	}
	return false
}

func (rn *run) deny(right string, p fmt.Stringer) int32 {
	return rn.fail(codeDenied, "denied: the manifest of %s grants no %s right over %s", rn.in.m.Name, right, p)
}

func hostRecv(rn *run, mem api.Memory, st []uint64) int32 {
	off := uint32(st[0])
	for _, s := range []string{rn.sender, rn.target} {
		if !mem.WriteString(off, s) {
			return rn.fail(codeBadArgument, "recv: buffer outside the module's memory")
		}
		off += uint32(len(s))
	}
	if len(rn.payload) > 0 && !mem.Write(off, rn.payload) {
		return rn.fail(codeBadArgument, "recv: buffer outside the module's memory")
	}
	return 0
}

func hostInbox(rn *run, mem api.Memory, st []uint64) int32 {
	if _, ok := mem.Read(uint32(st[0]), uint32(st[1])); !ok && st[1] > 0 {
		return rn.fail(codeBadArgument, "inbox outside the module's memory")
	}
	rn.inboxPtr, rn.inboxCap = uint32(st[0]), uint32(st[1])
	return 0
}

func hostFail(rn *run, mem api.Memory, st []uint64) int32 {
	n := min(st[1], 1024)
	b, ok := read(mem, st[0], n)
	if !ok {
		return rn.fail(codeBadArgument, "fail: buffer outside the module's memory")
	}
	rn.failText = string(b)
	return 0
}

func hostSend(rn *run, mem api.Memory, st []uint64) int32 {
	to, code := rn.path(mem, st[0], st[1])
	if code != 0 {
		return code
	}
	if !allowed(rn.in.m.Rights.Message, to) {
		return rn.deny("message", to)
	}
	b, code := rn.data(mem, st[2], st[3], MaxMessage)
	if code != 0 {
		return code
	}
	if err := rn.c.Send(rn.ctx, to, b); err != nil {
		return rn.failErr("send", to, err)
	}
	return 0
}

func hostCall(rn *run, mem api.Memory, st []uint64) int32 {
	to, code := rn.path(mem, st[0], st[1])
	if code != 0 {
		return code
	}
	if !allowed(rn.in.m.Rights.Message, to) {
		return rn.deny("message", to)
	}
	b, code := rn.data(mem, st[2], st[3], MaxMessage)
	if code != 0 {
		return code
	}
	timeout := time.Duration(int64(st[4]))
	if timeout <= 0 || timeout > rn.in.m.Deadline {
		timeout = rn.in.m.Deadline
	}
	ctx, cancel := context.WithTimeout(rn.ctx, timeout)
	defer cancel()
	v, err := rn.c.Call(ctx, to, b)
	if err != nil {
		return rn.failErr("call", to, err)
	}
	var out []byte
	switch v := v.(type) {
	case nil:
	case []byte:
		out = v
	case string:
		out = []byte(v)
	default:
		if out, err = canon.Marshal(v); err != nil {
			return rn.fail(codeFailed, "call %s: reply of type %T: %v", to, v, err)
		}
	}
	if len(out) > MaxMessage {
		return rn.fail(codeTooLarge, "call %s: reply of %d bytes, more than %d", to, len(out), MaxMessage)
	}
	rn.result = out
	return int32(len(out))
}

func hostPublish(rn *run, mem api.Memory, st []uint64) int32 {
	topic, code := rn.path(mem, st[0], st[1])
	if code != 0 {
		return code
	}
	if !allowed(rn.in.m.Rights.Publish, topic) {
		return rn.deny("publish", topic)
	}
	ps := rn.in.r.cfg.PubSub
	if ps == nil {
		return rn.fail(codeUnavailable, "publish %s: this node has no pub-sub", topic)
	}
	b, code := rn.data(mem, st[2], st[3], MaxMessage)
	if code != 0 {
		return code
	}
	if err := ps.Publish(rn.ctx, topic, b); err != nil {
		return rn.failErr("publish", topic, err)
	}
	return 0
}

func hostSubscribe(rn *run, mem api.Memory, st []uint64) int32 {
	b, ok := read(mem, st[0], st[1])
	if !ok || st[1] > 4096 {
		return rn.fail(codeBadArgument, "subscribe: pattern outside the module's memory or too long")
	}
	pt, err := paths.ParsePattern(string(b))
	if err != nil {
		return rn.fail(codeBadArgument, "subscribe: %v", err)
	}
	if !allowed(rn.in.m.Rights.Read, pt.Prefix()) {
		return rn.deny("read", pt)
	}
	if rn.in.r.cfg.PubSub == nil {
		return rn.fail(codeUnavailable, "subscribe %s: this node has no pub-sub", pt)
	}
	if _, err := rn.c.Subscribe(rn.ctx, pt); err != nil {
		return rn.failErr("subscribe", pt, err)
	}
	return 0
}

func hostReadFile(rn *run, mem api.Memory, st []uint64) int32 {
	p, code := rn.path(mem, st[0], st[1])
	if code != 0 {
		return code
	}
	if !allowed(rn.in.m.Rights.Read, p) {
		return rn.deny("read", p)
	}
	data, err := rn.in.r.cfg.Files.ReadFile(rn.ctx, p)
	if err != nil {
		return rn.failErr("read_file", p, err)
	}
	if len(data) > rn.in.r.cfg.MaxFile {
		return rn.fail(codeTooLarge, "read_file %s: %d bytes, more than the limit of %d", p, len(data), rn.in.r.cfg.MaxFile)
	}
	rn.result = data
	return int32(len(data))
}

func hostWriteFile(rn *run, mem api.Memory, st []uint64) int32 {
	p, code := rn.path(mem, st[0], st[1])
	if code != 0 {
		return code
	}
	if !allowed(rn.in.m.Rights.Write, p) {
		return rn.deny("write", p)
	}
	b, code := rn.data(mem, st[2], st[3], rn.in.r.cfg.MaxFile)
	if code != 0 {
		return code
	}
	if err := rn.in.r.cfg.Files.WriteFile(rn.ctx, p, b); err != nil {
		return rn.failErr("write_file", p, err)
	}
	return 0
}

var levels = [...]string{"debug", "info", "warn", "error"}

func hostLog(rn *run, mem api.Memory, st []uint64) int32 {
	b, ok := read(mem, st[1], min(st[2], maxLine))
	if !ok {
		return rn.fail(codeBadArgument, "log: buffer outside the module's memory")
	}
	lvl := "info"
	if st[0] < uint64(len(levels)) {
		lvl = levels[st[0]]
	}
	rn.in.logs.add(lvl + ": " + string(b))
	return 0
}

func hostTake(rn *run, mem api.Memory, st []uint64) int32 {
	n := min(uint64(len(rn.result)), st[1])
	if n > 0 && !mem.Write(uint32(st[0]), rn.result[:n]) {
		return rn.fail(codeBadArgument, "take: buffer outside the module's memory")
	}
	rn.result = rn.result[:0:0]
	return int32(n)
}
