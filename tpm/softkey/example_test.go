package softkey_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/softkey"
)

// A key made, stored sealed under a passphrase, loaded again, and used.
func Example() {
	dir, err := os.MkdirTemp("", "softkey")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "root.key")

	k, err := softkey.Generate()
	if err != nil {
		log.Fatal(err)
	}
	pass := []byte("correct horse")
	// softkey.Save(path, k, pass) seals with DefaultKDF, about a quarter
	// of a second; the example uses cheap costs instead.
	data, err := k.MarshalWithKDF(pass, softkey.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1})
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		log.Fatal(err)
	}

	if _, err := softkey.Load(path, nil); errors.Is(err, tpm.ErrNeedPassphrase) {
		fmt.Println("sealed: needs a passphrase")
	}
	again, err := softkey.Load(path, pass)
	if err != nil {
		log.Fatal(err)
	}
	defer again.Close()

	msg := []byte("hello")
	sig, err := again.Sign(context.Background(), msg)
	if err != nil {
		log.Fatal(err)
	}
	ok, err := k.PublicKey().Verify(msg, sig)
	fmt.Println("same key:", again.PublicKey().Equals(k.PublicKey()), "signature verifies:", ok && err == nil)
	fmt.Println(again.Info())
	// Output:
	// sealed: needs a passphrase
	// same key: true signature verifies: true
	// software (ed25519)
}
