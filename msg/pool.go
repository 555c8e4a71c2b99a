package msg

import (
	"bufio"
	"io"
	"sync"
)

// Buffers are pooled in three size classes, so that a small message does
// not pin a large buffer. A message's memory is bounded by these: its
// payload is streamed, never held whole.
var bufClasses = [...]int{2 << 10, 16 << 10, 128 << 10}

var bufPools [len(bufClasses)]sync.Pool

// getBuf returns an empty buffer of capacity at least n (n ≤ 128 KiB).
func getBuf(n int) *[]byte {
	for i, c := range bufClasses {
		if n <= c {
			if b, ok := bufPools[i].Get().(*[]byte); ok {
				*b = (*b)[:0]
				return b
			}
			b := make([]byte, 0, c)
			return &b
		}
	}
	b := make([]byte, 0, n)
	return &b
}

// putBuf returns b to its pool; buffers of other capacities are dropped.
func putBuf(b *[]byte) {
	for i, c := range bufClasses {
		if cap(*b) == c {
			*b = (*b)[:0]
			bufPools[i].Put(b)
			return
		}
	}
}

// readerSize is the buffer of the reader of a stream: it holds a header
// and, for small messages, the payload's first bytes.
const readerSize = 4 << 10

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerSize) }}

func getReader(r io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readers.Put(br)
}
