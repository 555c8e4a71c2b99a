package integration

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/internal/benchcmp"
)

// BenchmarkDaemonStartToReady: `bt daemon` from exec to its ready line,
// software keys, against `bt id` (exec, open the repo and the node key,
// print) as the anchor. Goal: ≤ 0.5 s. Run with -benchtime=1x.
func BenchmarkDaemonStartToReady(b *testing.B) {
	bt := newNode(b)
	bt.env = []string{"BT_PASSPHRASE=pw"}
	bt.ok("init", "--name", "bench", "--tpm", "none")
	var ready []time.Duration
	start := func() error {
		t0 := time.Now()
		d := bt.start()
		ready = append(ready, time.Since(t0))
		d.stop()
		return nil
	}
	id := func() error { bt.ok("id"); return nil }
	benchcmp.Compare(b, "daemon-start-and-stop-vs-bt-id", benchcmp.Options{Rounds: 5, Ops: 3}, start, id)
	slices.Sort(ready)
	fmt.Printf("bench daemon-start-to-ready: median %v over %d starts (goal ≤ 500ms)\n", ready[len(ready)/2].Round(time.Millisecond/10), len(ready))
	b.ReportMetric(float64(ready[len(ready)/2].Microseconds())/1000, "ready-ms")
}

// BenchmarkDaemonIdleRSS: resident memory of each daemon of a 10-node
// domain after one minute idle. Goal: ≤ 64 MiB. Reported, no anchor.
func BenchmarkDaemonIdleRSS(b *testing.B) {
	c := newCluster(b, 10)
	time.Sleep(time.Minute)
	var rss []int
	for _, d := range c.daemons {
		kb, err := vmRSS(d.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		rss = append(rss, kb)
	}
	slices.Sort(rss)
	med, max := rss[len(rss)/2], rss[len(rss)-1]
	b.ReportMetric(float64(med)/1024, "median-MiB")
	b.ReportMetric(float64(max)/1024, "max-MiB")
	fmt.Printf("bench daemon-idle-rss: 10 daemons after 60s idle: median %.1f MiB, max %.1f MiB (goal ≤ 64 MiB)\n", float64(med)/1024, float64(max)/1024)
}

func vmRSS(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
