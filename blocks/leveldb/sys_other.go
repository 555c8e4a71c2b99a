//go:build !linux

package leveldb

import (
	"errors"
	"os"
)

// datasync makes f's data durable (fsync where fdatasync is unavailable).
func datasync(f *os.File) error { return f.Sync() }

// punchHole is unsupported here; compaction reclaims the space instead.
func punchHole(f *os.File, off, n int64) error { return errors.ErrUnsupported }
