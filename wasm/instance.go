package wasm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/paths"
)

// instance is one deployed manifest on this node: its supervisor loop
// and, while it runs, its actor.
type instance struct {
	r      *Runtime
	sm     *SignedManifest
	m      Manifest // with defaults
	path   paths.Path
	logs   *ring
	stdout *lineWriter
	stderr *lineWriter
	sawOOM atomic.Bool   // the current incarnation's stderr said it ran out of memory
	stop   chan struct{} // closed by requestStop
	done   chan struct{} // closed when the supervisor returns
	once   sync.Once

	mu sync.Mutex
	// guarded by mu:
	state    string
	restarts int
	lastErr  string
	started  time.Time
	cid      string
	changed  chan struct{} // closed and replaced at every change
}

func newInstance(r *Runtime, sm *SignedManifest, path paths.Path) *instance {
	in := &instance{r: r, sm: sm, m: withDefaults(sm.Manifest), path: path, logs: newRing(r.cfg.LogLines),
		stop: make(chan struct{}), done: make(chan struct{}), state: StateStarting, changed: make(chan struct{})}
	in.stdout = &lineWriter{r: in.logs, prefix: "stdout: "}
	in.stderr = &lineWriter{r: in.logs, prefix: "stderr: ", watch: func(line string) {
		if strings.Contains(line, "out of memory") {
			in.sawOOM.Store(true)
		}
	}}
	return in
}

func (in *instance) requestStop() { in.once.Do(func() { close(in.stop) }) }

func (in *instance) stopRequested() bool {
	select {
	case <-in.stop:
		return true
	default:
		return false
	}
}

// update changes the instance's record under mu and wakes waiters.
func (in *instance) update(f func()) {
	in.mu.Lock()
	f()
	close(in.changed)
	in.changed = make(chan struct{})
	in.mu.Unlock()
}

func (in *instance) setState(s string) { in.update(func() { in.state = s }) }

func (in *instance) info() InstanceInfo {
	in.mu.Lock()
	defer in.mu.Unlock()
	return InstanceInfo{Name: in.m.Name, Path: in.path, Module: in.m.Module, ModuleCID: in.cid, State: in.state,
		Restarts: in.restarts, LastError: in.lastErr, Started: in.started}
}

func sortInfos(is []InstanceInfo) {
	slices.SortFunc(is, func(a, b InstanceInfo) int { return strings.Compare(a.Name, b.Name) })
}

// note writes a runtime line into the instance's log.
func (in *instance) note(format string, args ...any) {
	in.logs.add("runtime: " + fmt.Sprintf(format, args...))
}

// supervise runs incarnations of the module until the policy or Stop
// ends it.
func (in *instance) supervise() {
	r := in.r
	defer r.wg.Done()
	defer close(in.done)
	backoff := in.m.Restart.Backoff
	for {
		began := r.cfg.Clock()
		in.update(func() { in.state, in.started = StateStarting, began })
		outcome, err := in.runOnce()
		if in.stopRequested() || r.ctx.Err() != nil {
			in.note("stopped")
			in.setState(StateStopped)
			return
		}
		abnormal := outcome != actors.Normal || err != nil
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		in.update(func() { in.lastErr = msg })
		if abnormal {
			in.note("instance failed (%s): %s", outcome, msg)
			r.log.Warn("module failed", "name", in.m.Name, "outcome", outcome, "err", msg)
		} else {
			in.note("instance exited")
		}
		restart := in.m.Restart.Mode == RestartAlways || (in.m.Restart.Mode == RestartOnFailure && abnormal)
		if errors.Is(err, actors.ErrClosed) {
			restart = false // the actors runtime is gone: nothing to restart into
		}
		in.mu.Lock()
		n := in.restarts
		in.mu.Unlock()
		if restart && in.m.Restart.MaxRestarts > 0 && n >= in.m.Restart.MaxRestarts {
			in.note("giving up after %d restarts", n)
			restart = false
		}
		if !restart {
			if abnormal {
				in.setState(StateFailed)
			} else {
				in.setState(StateStopped)
			}
			return
		}
		if r.cfg.Clock().Sub(began) >= in.m.Restart.MaxBackoff {
			backoff = in.m.Restart.Backoff // it ran well: start the back-off over
		}
		in.update(func() { in.state = StateBackoff; in.restarts++ })
		in.note("restarting in %v", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-in.stop:
			t.Stop()
			in.note("stopped")
			in.setState(StateStopped)
			return
		case <-r.ctx.Done():
			t.Stop()
			in.setState(StateStopped)
			return
		}
		backoff = min(2*backoff, in.m.Restart.MaxBackoff)
	}
}

// runOnce runs one incarnation: load, compile, spawn, and wait for the
// actor to end. It returns the actor's outcome and error (Failed with the
// error when it could not start).
func (in *instance) runOnce() (actors.Outcome, error) {
	r := in.r
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	go func() {
		select {
		case <-in.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	data, err := r.cfg.Files.ReadFile(ctx, in.m.Module)
	if err != nil {
		return actors.Failed, fmt.Errorf("load module %s: %w", in.m.Module, err)
	}
	eng, code, id, err := r.compile(ctx, data, in.m.MemoryLimit)
	in.update(func() { in.cid = id.String() })
	if err != nil {
		return actors.Failed, err
	}
	a := &wasmActor{in: in, eng: eng, code: code}
	p, err := r.cfg.Actors.Spawn(ctx, in.m.Name, a, actors.WithProtocol(wasmProtocol))
	if err != nil {
		return actors.Failed, fmt.Errorf("spawn: %w", err)
	}
	down := make(chan actors.Down, 1)
	stopMon, err := r.cfg.Actors.MonitorFunc(context.WithoutCancel(ctx), p, func(d actors.Down) { down <- d })
	if err != nil {
		r.cfg.Actors.Stop(context.WithoutCancel(ctx), p)
		return actors.Failed, fmt.Errorf("monitor: %w", err)
	}
	defer stopMon()
	select {
	case d := <-down:
		return outcomeOf(d)
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := r.cfg.Actors.Stop(sctx, p); err != nil && !errors.Is(err, actors.ErrNoActor) {
		r.log.Warn("stopping module actor", "path", p, "err", err)
	}
	select {
	case d := <-down:
		return outcomeOf(d)
	case <-sctx.Done():
		return actors.Stopped, nil
	}
}

func outcomeOf(d actors.Down) (actors.Outcome, error) {
	if d.Outcome == actors.NoActor {
		return actors.Failed, errors.New("the actor vanished")
	}
	return d.Outcome, d.Err
}
