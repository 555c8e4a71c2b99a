package msg

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// writeTimeout bounds one write of the frames queued on a session: a peer
// that reads nothing for that long is dead to us.
const writeTimeout = 30 * time.Second

// writeSlack is how much of writeTimeout a write may find used up: the
// stream's write deadline moves only when it is nearer than
// writeTimeout-writeSlack, not on every write (moving it costs a timer in
// the muxer).
const writeSlack = time.Second

// maxSpare bounds the buffer a writer keeps between writes.
const maxSpare = 256 << 10

// frameWriter queues the frames of one session stream and writes them in
// order, many to a write. A frame that someone waits on (a call, a reply)
// is written by its caller itself when nobody is writing; other frames
// (sends, acks) are left to the writer's goroutine, which writes whatever
// was queued meanwhile at once: under load writes coalesce, and when idle
// a frame goes out at once.
type frameWriter struct {
	s      network.Stream
	onErr  func(error)
	kick   chan struct{} // 1-buffered: hands the writing over to loop
	closed chan struct{}
	dl     time.Time // the stream's write deadline; owned by the writing turn

	// mu guards the fields below.
	mu    sync.Mutex
	buf   []byte // frames queued
	spare []byte
	busy  bool // someone is writing: it writes buf until it is empty
	err   error
}

func newFrameWriter(s network.Stream, onErr func(error)) *frameWriter {
	return &frameWriter{s: s, onErr: onErr, kick: make(chan struct{}, 1), closed: make(chan struct{})}
}

// loop writes what write hands over until fail; run it on a goroutine.
func (w *frameWriter) loop() {
	for {
		select {
		case <-w.kick:
		case <-w.closed:
			return
		}
		w.mu.Lock()
		w.flushLocked()
		w.mu.Unlock()
	}
}

// begin locks the writer and returns its queue to append one frame to;
// end must follow. The error is the writer's, when it has failed (end is
// then not called).
func (w *frameWriter) begin() ([]byte, error) {
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return nil, err
	}
	return w.buf, nil
}

// end takes back the queue with the frame appended and unlocks. With now,
// the caller writes the queue itself unless someone is writing already;
// otherwise the writer's goroutine does. It waits for the peer only in
// that write.
func (w *frameWriter) end(buf []byte, now bool) error {
	w.buf = buf
	if w.busy {
		w.mu.Unlock()
		return nil
	}
	w.busy = true
	if !now {
		w.mu.Unlock()
		select {
		case w.kick <- struct{}{}:
		default:
		}
		return nil
	}
	w.flushLocked()
	err := w.err
	w.mu.Unlock()
	return err
}

// abandon unlocks after begin without queueing anything.
func (w *frameWriter) abandon() { w.mu.Unlock() }

// flushLocked writes buf until it is empty, unlocking mu around each
// write, and ends the turn. Called with mu held and busy set.
func (w *frameWriter) flushLocked() {
	var failed error
	for len(w.buf) > 0 && w.err == nil {
		b := w.buf
		w.buf = w.spare[:0]
		w.spare = nil
		w.mu.Unlock()
		if now := time.Now(); w.dl.Sub(now) < writeTimeout-writeSlack {
			w.dl = now.Add(writeTimeout)
			_ = w.s.SetWriteDeadline(w.dl)
		}
		_, err := w.s.Write(b)
		w.mu.Lock()
		if cap(b) <= maxSpare {
			w.spare = b[:0]
		}
		if err != nil && w.err == nil {
			w.err, failed = err, err
		}
	}
	w.busy = false
	if failed != nil {
		w.mu.Unlock()
		w.onErr(failed)
		w.mu.Lock()
	}
}

// fail refuses further frames with err and stops the goroutine.
func (w *frameWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	select {
	case <-w.closed:
	default:
		close(w.closed)
	}
	w.buf = nil
}
