package msg

import (
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"blocktree.dev/bt/internal/nettest"
)

func TestTmpSendRate(t *testing.T) {
	d := nettest.NewDomain(t)
	a, b := pair(t, d, Config{}, Config{})
	p := mustJoin(t, b.node.Path(), "sink")
	var got atomic.Int64
	b.Handle(p, func(_ context.Context, m *Message) ([]byte, error) {
		io.Copy(io.Discard, m.Body)
		got.Add(1)
		return nil, nil
	})
	ctx := context.Background()
	payload := make([]byte, 64)
	const n = 300000
	t0 := time.Now()
	for range n {
		if err := a.Send(ctx, p, bytes.NewReader(payload), 64); err != nil {
			t.Fatal(err)
		}
	}
	for got.Load() < n {
		time.Sleep(time.Millisecond)
	}
	t.Logf("%.0f msg/s", n/time.Since(t0).Seconds())
}
