//go:build bt_liar

package exchange

import (
	"context"
	"fmt"
	"io"
	"os"
)

// liarFromEnv returns the lying server that BT_LIE names, for the
// integration tests of lying daemons: "wrong" (random bytes under the CID
// asked), "other" (another stored block's bytes under the CID asked),
// "oversize" (a block frame over the protocol's limit), "silent" (reads
// want lists, never answers). Any other value, or none, is an honest
// server. Compiled only with the bt_liar build tag.
func liarFromEnv() liar {
	return liarNamed(os.Getenv("BT_LIE"))
}

// liarNamed returns the liar of that name, or nil.
func liarNamed(mode string) liar {
	switch mode {
	case "wrong":
		return lieWrong
	case "other":
		return lieOther
	case "oversize":
		return lieOversize
	case "silent":
		return lieSilent
	}
	return nil
}

func lieWrong(_ context.Context, l lie) error {
	n := len(l.Data)
	if n == 0 {
		n = 1024
	}
	return writeBlock(l.W, new([]byte), l.C, randomBytes(n))
}

func lieOther(_ context.Context, l lie) error {
	return writeBlock(l.W, new([]byte), l.C, l.Other())
}

func lieOversize(_ context.Context, l lie) error {
	cb := l.C.Bytes()
	n, _ := maxBody(ftBlock)
	n++ // one byte over the protocol's bound
	if _, err := l.W.Write(append(appendHeader(nil, ftBlock, n), append([]byte{byte(len(cb))}, cb...)...)); err != nil {
		return err
	}
	if _, err := l.W.Write(make([]byte, n-1-len(cb))); err != nil {
		return err
	}
	return nil // the client resets the stream
}

func lieSilent(_ context.Context, l lie) error {
	_, _ = io.Copy(io.Discard, l.R) // until the client gives up
	return fmt.Errorf("lied: silent")
}
