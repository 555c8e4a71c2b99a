// Package tpm is the key custody contract: a principal's long-term key pair
// held by a custodian that uses the private half and never hands it out.
// It imports no other Blocktree package; the custodians live below it.
//
// # Model
//
// A [Key] has a public half (a libp2p public key, from which the
// principal ID, the libp2p peer ID, is derived), signs, does the ECDH step
// that opening a readcap needs, says where it lives ([Info]) and closes.
// One key is both the signing key and the key-agreement key of one
// principal. Two custodians implement it:
//
//   - tpm/softkey: Ed25519 in process memory, with X25519 derived from the
//     same seed, stored in a key file that may be sealed under a passphrase.
//   - tpm/tpm2key: ECDSA and ECDH on NIST P-256 inside a TPM 2.0 (a device
//     such as /dev/tpmrm0, or swtpm over TCP in tests); only a wrapped blob
//     is stored, and only that TPM can load it.
//
// tpm/keytest is the conformance suite both pass; tpm/swtpmtest starts a
// real swtpm per test. docs/keys.md gives the key file format and
// docs/tpm.md the TPM blob.
//
// A [Device] is the parsed --tpm choice ([ParseDevice]): "auto" (the
// default: [DefaultDevice] when it exists, software keys otherwise; package
// repo decides), "none", a device path, or tcp:HOST:PORT. An explicit
// device that fails is an error, never a fallback to software keys.
//
// # Lifecycle
//
// A key is made or loaded by its custodian (softkey.Generate, softkey.Load,
// tpm2key.TPM.Create, tpm2key.TPM.Load), used through Key, and closed once
// it is no longer needed. Close is idempotent; a closed key fails with
// [ErrClosed]. The TPM is never on a hot path: a node's key certifies its
// short-lived libp2p host key, and signs writecaps and records now and then.
//
// # Errors
//
// Custodians wrap these sentinels with the operation ("softkey: sign: …"),
// so callers branch with errors.Is:
//
//   - [ErrUnavailable]: the custodian (a TPM device or socket) cannot be
//     reached.
//   - [ErrKeyLost]: the TPM no longer holds what the stored blob needs (it
//     was cleared or replaced); the key cannot come back.
//   - [ErrNeedPassphrase], [ErrWrongPassphrase]: a sealed key file.
//   - [ErrMalformed], [ErrUnknownVersion]: a stored key file or blob that
//     does not decode, or of a version this build does not know.
//   - [ErrCurveMismatch]: ECDH with a remote key on another curve.
//   - [ErrNotExportable]: the private half cannot leave a TPM.
//   - [ErrClosed]: the key was used after Close.
//
// Sign and ECDH also return ctx's error when it ends first.
//
// # Concurrency
//
// Every Key implementation is safe for concurrent use. PublicKey,
// ECDHPublicKey and Info never fail and never reach the custodian.
package tpm
