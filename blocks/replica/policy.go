package replica

import (
	"fmt"

	"blocktree.dev/bt/paths"
)

// MaxFactor bounds a replication factor.
const MaxFactor = 16

// Policy gives each path its replication factor: the factor of the longest
// prefix in ByPath that covers the path, else Default (1 when zero: only
// the node that stores the file holds it).
type Policy struct {
	Default int
	ByPath  map[paths.Path]int
}

// Factor returns p's replication factor; the zero Path gets Default.
func (pol Policy) Factor(p paths.Path) int {
	best, depth := pol.Default, -1
	if !p.IsZero() {
		for prefix, f := range pol.ByPath {
			if p.HasPrefix(prefix) {
				if d := prefix.Depth(); d > depth {
					best, depth = f, d
				}
			}
		}
	}
	return max(best, 1)
}

// Validate checks every factor is in 1..MaxFactor (Default may be 0).
func (pol Policy) Validate() error {
	if pol.Default < 0 || pol.Default > MaxFactor {
		return fmt.Errorf("replica: default replication factor %d: want 1..%d", pol.Default, MaxFactor)
	}
	for p, f := range pol.ByPath {
		if f < 1 || f > MaxFactor {
			return fmt.Errorf("replica: replication factor %d for %s: want 1..%d", f, p, MaxFactor)
		}
	}
	return nil
}
