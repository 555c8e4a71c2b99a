// Package softkey keeps tpm.Key keys in process memory: the software
// custodian, used where there is no TPM and for the root key of a domain
// that is not kept in one.
//
// # Model
//
// A [Key] is an Ed25519 key pair made from a 32-byte seed ([Generate],
// [FromSeed]). Its key-agreement key is the X25519 key derived from the same
// seed (the RFC 8032 scalar: SHA-512 of the seed, first 32 bytes, clamped, as
// age and libsodium derive it), so one seed is the whole principal. Info
// reports tpm.KindSoftware and "ed25519".
//
// # Key files
//
// [Key.Marshal] and [Unmarshal] are the key file, version 1, in canonical
// CBOR (docs/keys.md): either the seed in the clear, or the seed sealed with
// XChaCha20-Poly1305 under an argon2id key from a passphrase ([DefaultKDF];
// [Key.MarshalWithKDF] picks other costs), with every other field of the
// file authenticated. [Sealed] says whether a file needs a passphrase. A
// file asking the KDF for more than fixed limits is refused as malformed,
// so a crafted file cannot take minutes or gigabytes to open. Frozen
// examples of both forms live in testdata/ and every build must read them.
//
// [Save] writes a key file with mode 0600, durably (write, sync, rename,
// sync the directory); [Load] refuses a file that group or others can read
// ([ErrPermissions], as ssh does), then opens it.
//
// # Lifecycle
//
//	k, err := softkey.Generate()             // or softkey.Load(path, passphrase)
//	err = softkey.Save(path, k, passphrase)  // empty passphrase: stored in the clear
//	sig, err := k.Sign(ctx, msg)             // Ed25519; verifies with k.PublicKey()
//	z, err := k.ECDH(ctx, peerX25519)        // 32-byte shared secret
//	k.Close()                                // later uses fail with tpm.ErrClosed
//
// Close only marks the key closed: the key material stays in memory until
// it is collected, since Go offers no reliable way to wipe it.
//
// # Errors
//
// Errors wrap the sentinels of package tpm and start with "softkey:":
// tpm.ErrMalformed and tpm.ErrUnknownVersion for files that do not decode,
// tpm.ErrNeedPassphrase and tpm.ErrWrongPassphrase for sealed ones,
// tpm.ErrCurveMismatch for ECDH with a key that is not X25519,
// tpm.ErrClosed after Close; [ErrPermissions] from Load.
//
// # Concurrency
//
// A Key is safe for concurrent use; Sign and ECDH never block.
package softkey
