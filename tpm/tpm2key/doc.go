// Package tpm2key keeps tpm.Key keys in a TPM 2.0, through go-tpm.
//
// # Model
//
// A [TPM] is one connection to one TPM: a character device such as
// /dev/tpmrm0 (the kernel's resource manager) or a TCP address where a
// simulator such as swtpm serves the raw TPM 2.0 command stream. Under it
// live keys. Each key is an ECC NIST P-256 key created inside the TPM with
// TPM2_Create under a parent storage key, and is both a signing key (ECDSA,
// SHA-256) and a key-agreement key (ECDH): one key, one principal. Its
// private half never leaves the TPM.
//
// The parent is the TCG reference ECC P-256 storage root key (SRK),
// created with TPM2_CreatePrimary in the owner hierarchy with an empty
// authorization. It is derived from the TPM's owner seed, so it is the same
// key after every reboot until the TPM is cleared; nothing is made
// persistent in the TPM's NV memory, and nothing needs provisioning. The
// parent is created when the connection opens and kept loaded while it
// lives.
//
// What the node stores is a [Blob]: the key's public area, its private area
// as the TPM wrapped it (encrypted and integrity-protected under the
// parent), the parent's template and the parent's Name at creation time.
// Only the TPM that created the key can load it again. docs/tpm.md gives the
// key template and the exact encoding.
//
// # Lifecycle
//
//	t, err := tpm2key.Open(ctx, dev)   // connect; create the parent
//	k, blob, err := t.Create(ctx)      // new key; store blob (0600)
//	k, err = t.Load(ctx, blob)         // or: the stored key again
//	sig, err := k.Sign(ctx, msg)       // verifies with k.PublicKey()
//	z, err := k.ECDH(ctx, peerP256)    // 32-byte shared X coordinate
//	k.Close()                          // flush the key
//	t.Close()                          // flush the parent, disconnect
//
// A loaded key stays loaded until it is closed: Sign and ECDH are one TPM
// command each. Closing the TPM closes its keys.
//
// # Restarts, reconnects and lost keys
//
// When a command fails because the connection broke, or because the TPM
// no longer holds the key's handle (the TPM restarted, or another TPM user
// flushed it), the key reconnects, re-creates the parent, reloads itself
// from its blob, and retries the command, once. A handle from an earlier
// connection is reused only if TPM2_ReadPublic shows the same object (by
// Name) under it: swtpm keeps objects across connections, so reconnecting
// does not fill its few object slots with copies.
//
// If the TPM's owner seed changed (the TPM was cleared, or this is another
// TPM), the re-created parent has another Name than the blob records, and
// Load, Sign and ECDH fail with an error wrapping tpm.ErrKeyLost. The same
// happens when the TPM itself refuses the private area (TPM_RC_INTEGRITY or
// TPM_RC_SENSITIVE from TPM2_Load): it was wrapped by another TPM, or altered.
// A lost key cannot be recovered; the node needs a new key and a new
// writecap.
//
// # Errors
//
// Errors wrap the sentinels of package tpm, and name the operation
// ("tpm2key: sign: …"):
//
//   - tpm.ErrUnavailable: the device cannot be opened or dialled, or stopped
//     answering (also when ctx's deadline passed while waiting for it); the
//     message names the device and what to check.
//   - tpm.ErrKeyLost: this TPM can no longer load the key (above).
//   - tpm.ErrMalformed, tpm.ErrUnknownVersion: a blob DecodeBlob refuses.
//   - tpm.ErrCurveMismatch: ECDH with a key that is not P-256 (or nil).
//   - tpm.ErrClosed: the key or its TPM was closed.
//   - context.Canceled and context.DeadlineExceeded when ctx ends.
//   - Anything else is the TPM's refusal, a go-tpm tpm2.TPMRC (for example
//     an owner hierarchy with a password, dictionary-attack lockout, or no
//     free object slot).
//
// # Contexts and timeouts
//
// Every operation takes a context. On a TCP connection its deadline (or
// [DefaultTimeout] when it has none) is the connection's deadline, and
// cancelling it interrupts the command in flight; the connection is then
// dropped, since its stream is mid-response, and the next operation dials
// again. A character device cannot be interrupted: the context is checked
// before each command and the kernel bounds each command.
//
// # Concurrency
//
// A TPM and its keys are safe for concurrent use. Commands are serialised
// on the connection by one mutex: the TPM runs one command at a time
// anyway, and keys are never on a hot path. PublicKey, ECDHPublicKey and
// Info never touch the TPM.
//
// A TPM without a resource manager (swtpm, /dev/tpm0) holds only a few
// transient objects (swtpm: three), and a second connection to swtpm waits
// until the first closes. Keep one TPM per device per process and open all
// its keys there.
package tpm2key
