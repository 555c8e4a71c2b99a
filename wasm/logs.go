package wasm

import (
	"bytes"
	"sync"
)

// DefaultLogLines is how many lines of a module's output a Runtime keeps.
const DefaultLogLines = 1000

// maxLine bounds one log line; longer output is split.
const maxLine = 4096

// ring keeps the last lines of an instance's output and feeds followers.
type ring struct {
	mu sync.Mutex
	// guarded by mu:
	lines     []string // ring buffer of at most cap lines
	start     int
	followers map[*follower]struct{}
}

type follower struct {
	ch   chan string
	drop int // lines dropped because the follower was slow
}

func newRing(n int) *ring {
	return &ring{lines: make([]string, 0, n), followers: make(map[*follower]struct{})}
}

func (r *ring) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) < cap(r.lines) {
		r.lines = append(r.lines, line)
	} else {
		r.lines[r.start] = line
		r.start = (r.start + 1) % len(r.lines)
	}
	for f := range r.followers {
		select {
		case f.ch <- line:
		default:
			f.drop++ // a follower too slow loses lines, never blocks the module
		}
	}
}

func (r *ring) snapshot(follow bool) ([]string, <-chan string, func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.lines))
	out = append(out, r.lines[r.start:]...)
	out = append(out, r.lines[:r.start]...)
	if !follow {
		return out, nil, func() {}
	}
	f := &follower{ch: make(chan string, 256)}
	r.followers[f] = struct{}{}
	var once sync.Once
	return out, f.ch, func() {
		once.Do(func() {
			r.mu.Lock()
			delete(r.followers, f)
			r.mu.Unlock()
			close(f.ch)
		})
	}
}

// lineWriter splits a stream (the module's stdout or stderr) into lines
// with a prefix.
type lineWriter struct {
	r      *ring
	prefix string
	watch  func(line string) // sees every line; may be nil
	mu     sync.Mutex
	buf    []byte // guarded by mu: the unfinished line
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			for len(w.buf) >= maxLine {
				w.r.add(w.prefix + string(w.buf[:maxLine]))
				w.buf = append(w.buf[:0], w.buf[maxLine:]...)
			}
			break
		}
		w.buf = append(w.buf, p[:i]...)
		if w.watch != nil {
			w.watch(string(w.buf))
		}
		w.r.add(w.prefix + string(w.buf))
		w.buf = w.buf[:0]
		p = p[i+1:]
	}
	return n, nil
}

// flush emits an unfinished line.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.r.add(w.prefix + string(w.buf))
		w.buf = w.buf[:0]
	}
}
