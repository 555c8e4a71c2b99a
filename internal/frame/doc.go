// Package frame reads and writes the length-prefixed frames of
// Blocktree's stream protocols, so that each protocol states its framing
// (which length prefix, how large a body may be, whether a body may be
// empty) and none of them writes the reading loop again.
//
// # Model
//
// A frame is a length prefix followed by that many bytes of body. A
// [Format] names the prefix and the bounds:
//
//   - [Uvarint]: an unsigned LEB128 varint, as encoding/binary writes it
//     and as libp2p's multistream and msgio varint framing use. Readers
//     accept what binary.ReadUvarint accepts (non-minimal encodings
//     included), so switching a protocol to this package does not change
//     which inputs it reads.
//   - [Uint32]: four bytes, big-endian.
//
// A Format is a small value: protocols whose bound depends on what came
// before the prefix (a frame type, say) make one per frame at no cost.
// The wire formats themselves are documented by the protocols in docs/.
//
// # Errors
//
// The length is checked before anything is allocated or read for the
// body. A length over Max is [ErrTooLarge] (so is a varint longer than
// ten bytes or overflowing 64 bits); a zero length when Empty is false is
// [ErrEmpty]. End of input before the first byte of a frame is io.EOF, a
// clean end between frames; end of input inside a frame is
// io.ErrUnexpectedEOF. Other errors are the reader's. Protocols wrap
// these in their own sentinels.
//
// # Concurrency
//
// A Format is immutable and safe for concurrent use; the readers and
// writers it is given are not, as usual.
package frame
