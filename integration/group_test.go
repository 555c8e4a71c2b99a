package integration

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQueueGroup: two nodes serve a path of a third as a queue group,
// with the writecaps its `bt grant write` printed; each call to the path
// is answered by exactly one member, both take a share, and when one
// member goes away the other answers alone.
func TestQueueGroup(t *testing.T) {
	c := newCluster(t, 3)
	svc := c.path(0) + "/svc"
	for i := 1; i < 3; i++ {
		eventually(t, 20*time.Second, fmt.Sprintf("n0 reaches n%d", i), func() error {
			if r := c.nodes[0].run("ping", c.path(i)); r.code != 0 {
				return fmt.Errorf("%s", r)
			}
			return nil
		})
	}
	// Serving another node's path needs its writecap.
	c.nodes[1].fails(exitCapable, "writecap", "listen", svc, "--group", "workers")
	var members []*bgProc
	for i := 1; i < 3; i++ {
		wc := strings.TrimSpace(c.nodes[0].ok("grant", "write", c.path(i), svc).stdout)
		members = append(members, c.nodes[i].background("listening", "listen", svc, "--group", "workers", "--writecap", wc, "--echo"))
	}
	const n = 40
	for i := range n {
		want := fmt.Sprintf("job %d", i)
		if r := c.nodes[0].ok("call", svc, want); r.stdout != want {
			t.Fatalf("call %d answered %q, want the echo %q", i, r.stdout, want)
		}
	}
	got := 0
	for i, m := range members {
		k := len(m.output())
		got += k
		if k == 0 {
			t.Errorf("member n%d handled none of %d calls: the group does not spread them", i+1, n)
		}
	}
	if got != n {
		t.Fatalf("the members printed %d messages for %d calls: each call must reach exactly one", got, n)
	}

	// One member goes away; within the bound the other answers every call.
	_ = members[0].cmd.Process.Signal(syscall.SIGTERM)
	<-members[0].done
	before := len(members[1].output())
	eventually(t, 10*time.Second, "the remaining member answers", func() error {
		if r := c.nodes[0].run("call", svc, "after"); r.code != 0 {
			return fmt.Errorf("%s", r)
		}
		return nil
	})
	for i := range 10 {
		if r := c.nodes[0].ok("call", svc, "x"); r.stdout != "x" {
			t.Fatalf("call %d after a member left: %q", i, r.stdout)
		}
	}
	if after := len(members[1].output()); after-before < 11 {
		t.Fatalf("the remaining member handled %d of the calls after the other left, want all 11", after-before)
	}
}
