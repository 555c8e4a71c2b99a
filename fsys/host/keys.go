package host

import (
	"encoding/binary"
	"errors"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

var (
	keyMeta   = []byte("M")
	keyPinned = []byte("P") // uint64be: every version ≤ it has its blocks pinned
)

const (
	pfxRecord  = 'R' // R ino(8) name(32) ^version(8) → fsys.MarshalRecord, or empty: deleted
	pfxLog     = 'L' // L version(8) → log entry
	pfxKeyLog  = 'K' // K ino(8) name(32) ^version(8) → empty
	pfxReadcap = 'C' // C reader 0x00 ino(8) → caps.Readcap encoding
)

const metaVersion = 1

// meta: version(1) ‖ root(8) ‖ volume version(8) ‖ volume path.
func encodeMeta(root fsys.Ino, version uint64, vol paths.Path) []byte {
	b := []byte{metaVersion}
	b = binary.BigEndian.AppendUint64(b, uint64(root))
	b = binary.BigEndian.AppendUint64(b, version)
	return append(b, vol.String()...)
}

// decodeMeta parses the volume's meta entry.
func decodeMeta(b []byte) (root fsys.Ino, version uint64, vol paths.Path, err error) {
	if len(b) < 17 || b[0] != metaVersion {
		return 0, 0, paths.Path{}, errors.New("bad volume meta")
	}
	root = fsys.Ino(binary.BigEndian.Uint64(b[1:]))
	version = binary.BigEndian.Uint64(b[9:])
	vol, err = paths.Parse(string(b[17:]))
	if err != nil || root == 0 {
		return 0, 0, paths.Path{}, errors.New("bad volume meta")
	}
	return root, version, vol, nil
}

func recPrefix(k fsys.RecordKey) []byte {
	b := make([]byte, 0, 49)
	b = append(b, pfxRecord)
	b = binary.BigEndian.AppendUint64(b, uint64(k.Ino))
	return append(b, k.Name[:]...)
}

func recKey(k fsys.RecordKey, version uint64) []byte {
	return binary.BigEndian.AppendUint64(recPrefix(k), ^version)
}

// parseRecKey splits an R key.
func parseRecKey(b []byte) (fsys.RecordKey, uint64, bool) {
	if len(b) != 49 || b[0] != pfxRecord {
		return fsys.RecordKey{}, 0, false
	}
	var k fsys.RecordKey
	k.Ino = fsys.Ino(binary.BigEndian.Uint64(b[1:]))
	copy(k.Name[:], b[9:41])
	return k, ^binary.BigEndian.Uint64(b[41:]), true
}

func keyLogKey(k fsys.RecordKey, version uint64) []byte {
	b := make([]byte, 0, 49)
	b = append(b, pfxKeyLog)
	b = binary.BigEndian.AppendUint64(b, uint64(k.Ino))
	b = append(b, k.Name[:]...)
	return binary.BigEndian.AppendUint64(b, ^version)
}

func logKey(version uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{pfxLog}, version)
}

func readcapKey(reader paths.ID, ino fsys.Ino) []byte {
	b := append([]byte{pfxReadcap}, reader...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(ino))
}

// log entry: version(1) ‖ time(8, unix ns) ‖ len(writer)(2) ‖ writer ‖
// len(op)(1) ‖ op ‖ keys (40 bytes each: ino ‖ name).
type logEntry struct {
	time   int64
	writer string
	op     string
	keys   []fsys.RecordKey
}

func encodeLog(e *logEntry) []byte {
	b := make([]byte, 0, 12+len(e.writer)+len(e.op)+40*len(e.keys))
	b = append(b, 1)
	b = binary.BigEndian.AppendUint64(b, uint64(e.time))
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.writer)))
	b = append(b, e.writer...)
	b = append(b, byte(len(e.op)))
	b = append(b, e.op...)
	for _, k := range e.keys {
		b = binary.BigEndian.AppendUint64(b, uint64(k.Ino))
		b = append(b, k.Name[:]...)
	}
	return b
}

func decodeLog(b []byte) (*logEntry, error) {
	bad := errors.New("bad log entry")
	if len(b) < 12 || b[0] != 1 {
		return nil, bad
	}
	e := &logEntry{time: int64(binary.BigEndian.Uint64(b[1:]))}
	n := int(binary.BigEndian.Uint16(b[9:]))
	b = b[11:]
	if len(b) < n+1 {
		return nil, bad
	}
	e.writer = string(b[:n])
	b = b[n:]
	n = int(b[0])
	b = b[1:]
	if len(b) < n || (len(b)-n)%40 != 0 {
		return nil, bad
	}
	e.op = string(b[:n])
	b = b[n:]
	for ; len(b) > 0; b = b[40:] {
		var k fsys.RecordKey
		k.Ino = fsys.Ino(binary.BigEndian.Uint64(b))
		copy(k.Name[:], b[8:40])
		e.keys = append(e.keys, k)
	}
	return e, nil
}
