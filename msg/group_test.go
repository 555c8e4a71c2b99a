package msg

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

// groupCluster is a host a, whose path svc is served by a group of
// members, and a sender s; all of one domain.
type groupCluster struct {
	d       *nettest.Domain
	host, s *testNode
	members []*testNode
	svc     paths.Path
	counts  []atomic.Int64
	removes []func()
}

func newGroupCluster(t *testing.T, n int) *groupCluster {
	t.Helper()
	d := nettest.NewDomain(t)
	c := &groupCluster{d: d, counts: make([]atomic.Int64, n)}
	c.host = start(t, d, "host", Config{})
	c.s = start(t, d, "sender", Config{}, c.host.node.AddrInfo())
	for i := range n {
		c.members = append(c.members, start(t, d, fmt.Sprintf("m%d", i), Config{}, c.host.node.AddrInfo()))
	}
	waitPublished(t, append([]*testNode{c.host, c.s}, c.members...)...)
	c.svc = mustJoin(t, c.host.node.Path(), "svc")
	for i, m := range c.members {
		wc := d.GrantDay(t, m.nodeID, c.svc)
		remove, err := m.HandleGroup(c.svc, "workers", wc, func(_ context.Context, msg *Message) ([]byte, error) {
			c.counts[i].Add(1)
			return []byte(m.node.Path().String() + " " + msg.From.String()), nil
		})
		if err != nil {
			t.Fatalf("member %d joins: %v", i, err)
		}
		c.removes = append(c.removes, remove)
	}
	return c
}

func TestGroupSpreadsAndKeepsSender(t *testing.T) {
	c := newGroupCluster(t, 2)
	ctx := nettest.Context(t, 30*time.Second)
	const n = 400
	for i := range n {
		reply, err := c.s.Call(ctx, c.svc, nil, 0)
		if err != nil {
			t.Fatalf("call %d to the group: %v", i, err)
		}
		if want := " " + c.s.node.Path().String(); len(reply) < len(want) || string(reply[len(reply)-len(want):]) != want {
			t.Fatalf("a member saw the message as from %q, want the sender %s", reply, c.s.node.Path())
		}
	}
	var sum int64
	for i := range c.counts {
		got := c.counts[i].Load()
		sum += got
		if got < n/4 {
			t.Errorf("member %d handled %d of %d calls: the group does not spread them", i, got, n)
		}
	}
	if sum != n {
		t.Fatalf("members handled %d messages for %d calls: each must go to exactly one", sum, n)
	}
	// Sends too, each to exactly one member.
	for i := range c.counts {
		c.counts[i].Store(0)
	}
	for i := range n {
		if err := c.s.Send(ctx, c.svc, nil, 0); err != nil {
			t.Fatalf("send %d to the group: %v", i, err)
		}
	}
	waitFor(t, 20*time.Second, "the group's members did not get every send", func() bool {
		return c.counts[0].Load()+c.counts[1].Load() == n
	})
	time.Sleep(100 * time.Millisecond)
	if got := c.counts[0].Load() + c.counts[1].Load(); got != n {
		t.Fatalf("members handled %d sends of %d", got, n)
	}
}

func TestGroupMemberDeath(t *testing.T) {
	c := newGroupCluster(t, 2)
	ctx := nettest.Context(t, 60*time.Second)
	for range 20 {
		if _, err := c.s.Call(ctx, c.svc, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	dead := c.members[1]
	dead.stop()
	died := time.Now()
	// Calls in flight to it as it dies may fail (at most once: none is
	// sent again); it leaves the host's rotation within the bound.
	waitFor(t, groupTTL+2*time.Second, "the dead member stayed in the group", func() bool {
		g := c.host.groupFor(c.svc)
		g.mu.Lock()
		defer g.mu.Unlock()
		live := 0
		for _, m := range g.members {
			if time.Now().Before(m.expiry) {
				live++
			}
		}
		return live == 1
	})
	t.Logf("the dead member left the rotation %v after it died", time.Since(died).Round(time.Millisecond))
	before := c.counts[1].Load()
	for range 20 {
		if _, err := c.s.Call(ctx, c.svc, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	if c.counts[1].Load() != before {
		t.Fatal("a dead member handled calls")
	}
	// The last member leaving: the path has no endpoint.
	c.removes[0]()
	if _, err := c.s.Call(ctx, c.svc, nil, 0); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("call to a group without members = %v, want ErrNoEndpoint", err)
	}
}

func TestGroupJoinRefusals(t *testing.T) {
	d := nettest.NewDomain(t)
	host := start(t, d, "host", Config{})
	m := start(t, d, "m", Config{}, host.node.AddrInfo())
	waitPublished(t, host, m)
	svc := mustJoin(t, host.node.Path(), "svc")
	h := func(context.Context, *Message) ([]byte, error) { return nil, nil }
	if _, err := m.HandleGroup(svc, "g", nil, h); !errors.Is(err, ErrDenied) {
		t.Fatalf("join of another node's path without a writecap = %v, want ErrDenied", err)
	}
	other := d.GrantDay(t, m.nodeID, mustJoin(t, host.node.Path(), "other"))
	if _, err := m.HandleGroup(svc, "g", other, h); !errors.Is(err, ErrDenied) {
		t.Fatalf("join with a writecap for another path = %v, want ErrDenied", err)
	}
	notMine := d.GrantDay(t, host.nodeID, svc)
	if _, err := m.HandleGroup(svc, "g", notMine, h); !errors.Is(err, ErrDenied) {
		t.Fatalf("join with a writecap held by another node = %v, want ErrDenied", err)
	}
	// The host itself joins its own path without one; another name is
	// refused, and so is a Handle at a group's path.
	remove, err := host.HandleGroup(svc, "g", nil, h)
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	if _, err := m.HandleGroup(svc, "other-name", d.GrantDay(t, m.nodeID, svc), h); !errors.Is(err, ErrDenied) {
		t.Fatalf("join under another name = %v, want a refusal", err)
	}
	if _, err := host.Handle(svc, h); !errors.Is(err, ErrExists) {
		t.Fatalf("Handle at a group's path = %v, want ErrExists", err)
	}
	ctx := nettest.Context(t, 10*time.Second)
	if _, err := m.Call(ctx, svc, nil, 0); err != nil {
		t.Fatalf("call to a group whose member is its host: %v", err)
	}
}
