//go:build linux

package leveldb

import (
	"os"
	"syscall"
)

// datasync makes f's data (and the size, which reading it back needs)
// durable: fdatasync(2), which skips metadata such as the modification
// time.
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

// punchHole gives the blocks of [off, off+n) in f back to the file system
// without changing f's size (fallocate(2) PUNCH_HOLE | KEEP_SIZE); the
// range reads as zeros afterwards. File systems without hole punching
// report an error, which callers ignore: compaction reclaims the space.
func punchHole(f *os.File, off, n int64) error {
	const keepSize, punchHole = 0x01, 0x02
	if n <= 0 {
		return nil
	}
	return syscall.Fallocate(int(f.Fd()), keepSize|punchHole, off, n)
}
