package exchange

import (
	"bufio"
	"context"
	"crypto/rand"
	"io"

	"github.com/ipfs/go-cid"
)

// liar, when an Exchange has one, replaces the server's answer to each
// wanted CID: it writes what it likes to W (or nothing) and returns an
// error to end the stream. Only tests and the bt_liar build (lie.go) make
// one; see docs/exchange.md.
type liar func(ctx context.Context, l lie) error

// lie is what a liar may use to answer one want.
type lie struct {
	W     *bufio.Writer // the stream, buffered; flushed by the server
	R     io.Reader     // reads nothing until the client goes away, then EOF
	C     cid.Cid       // the CID wanted
	Data  []byte        // its bytes, if Have
	Have  bool
	Other func() []byte // the bytes of another stored block (or random ones)
}

// randomBytes returns n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
