package tpm2key

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultTimeout bounds one operation (one Open, Create, Load, Sign, ECDH,
// including any reconnect and reload it needs) whose context has no
// deadline of its own. A TPM that has not answered by then is treated as
// unavailable. Real TPMs answer in milliseconds to a few seconds; creating a
// key is the slowest step.
const DefaultTimeout = 30 * time.Second

const (
	headerSize      = 10      // tag (2) + size (4) + code (4), commands and responses alike
	maxResponseSize = 1 << 16 // far above any TPM's MAX_RESPONSE_SIZE (4096 in the reference code)
)

// link is one connection to a TPM carrying raw TPM 2.0 commands: one
// command in, one response out. A link that fails is closed and not used
// again; the TPM dials a new one.
type link interface {
	// send writes cmd and returns the whole response, giving up at
	// deadline or when ctx ends. The returned slice may be reused by the
	// next send. Errors are I/O errors: the TPM's own response codes are
	// in the response.
	send(ctx context.Context, deadline time.Time, cmd []byte) ([]byte, error)
	close() error
}

// dial opens a link to dev: a TCP stream for Addr, the character device for
// Path. Errors are returned as they come; the caller wraps ErrUnavailable.
func dial(ctx context.Context, deadline time.Time, addr, path string) (link, error) {
	if addr != "" {
		d := net.Dialer{Deadline: deadline}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return &tcpLink{conn: c}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := linuxtpm.Open(path)
	if err != nil {
		return nil, err
	}
	return &deviceLink{tpm: f}, nil
}

// tcpLink speaks the raw TPM command stream over TCP, as swtpm's
// --server type=tcp does: write a command, read the 10-byte response
// header, then the rest of the responseSize it announces. Each send sets
// the operation's deadline on the connection and is interrupted when its
// context ends, so a silent peer cannot hold a caller.
type tcpLink struct {
	conn net.Conn
	buf  []byte // response buffer, reused; callers serialise sends
}

// longAgo is a deadline in the past: setting it interrupts blocked I/O.
var longAgo = time.Unix(1, 0)

func (l *tcpLink) send(ctx context.Context, deadline time.Time, cmd []byte) ([]byte, error) {
	if err := l.conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if ctx.Done() != nil {
		// Cancellation before the deadline: interrupt the I/O when ctx
		// ends. armed keeps a late callback from touching a later send.
		var mu sync.Mutex
		armed := true
		stop := context.AfterFunc(ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			if armed {
				l.conn.SetDeadline(longAgo)
			}
		})
		defer func() {
			if !stop() {
				mu.Lock()
				armed = false
				mu.Unlock()
			}
		}()
	}
	if _, err := l.conn.Write(cmd); err != nil {
		return nil, ctxErr(ctx, err)
	}
	if cap(l.buf) < headerSize {
		l.buf = make([]byte, 0, 1024)
	}
	b := l.buf[:headerSize]
	if _, err := io.ReadFull(l.conn, b); err != nil {
		return nil, ctxErr(ctx, err)
	}
	size := binary.BigEndian.Uint32(b[2:6])
	if size < headerSize || size > maxResponseSize {
		return nil, fmt.Errorf("peer sent a response of %d bytes: it does not speak the raw TPM 2.0 command stream", size)
	}
	if int(size) > cap(b) {
		nb := make([]byte, size)
		copy(nb, b)
		l.buf = nb[:0]
		b = nb
	}
	b = b[:size]
	if _, err := io.ReadFull(l.conn, b[headerSize:]); err != nil {
		return nil, ctxErr(ctx, err)
	}
	return b, nil
}

func (l *tcpLink) close() error { return l.conn.Close() }

// ctxErr prefers the context's reason over the I/O timeout it caused.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// deviceLink is a TPM character device such as /dev/tpmrm0. Character
// devices take no deadlines: the TPM checks ctx before each command, and
// each command is bounded by the kernel driver's own TPM timeouts.
type deviceLink struct {
	tpm transport.TPMCloser
}

func (l *deviceLink) send(_ context.Context, _ time.Time, cmd []byte) ([]byte, error) {
	return l.tpm.Send(cmd)
}

func (l *deviceLink) close() error { return l.tpm.Close() }

// hint says what to check when dialing dev failed with err.
func hint(addr, path string, err error) string {
	switch {
	case addr != "":
		return "is the TPM simulator (swtpm socket --tpm2 --server type=tcp,port=…) running and listening there?"
	case errors.Is(err, os.ErrNotExist):
		return "no such device: is a TPM 2.0 enabled in the firmware and its driver (tpm_tis, tpm_crb) loaded?"
	case errors.Is(err, os.ErrPermission):
		return "permission denied: add the user to the group owning the device (usually tss) or run with access to it"
	case errors.Is(err, linuxtpm.ErrFileIsNotDevice):
		return "the path is not a character device"
	}
	return "check that the device exists and is a TPM 2.0 resource manager such as /dev/tpmrm0"
}
