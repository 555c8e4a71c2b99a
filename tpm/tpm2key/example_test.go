package tpm2key_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/tpm2key"
)

// A node's first start: create the key in the TPM and store its blob; later
// starts load the blob. (Compiled, not run: it needs a TPM. The tests run
// the same steps against swtpm.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev, err := tpm.ParseDevice("tcp:127.0.0.1:2321") // or "/dev/tpmrm0"
	if err != nil {
		log.Fatal(err)
	}
	t, err := tpm2key.Open(ctx, dev)
	if err != nil {
		log.Fatal(err) // errors.Is(err, tpm.ErrUnavailable): no TPM there
	}
	defer t.Close()

	var k tpm.Key
	if blob, err := os.ReadFile("node.tpm"); err == nil {
		k, err = t.Load(ctx, blob) // errors.Is(err, tpm.ErrKeyLost): TPM cleared
		if err != nil {
			log.Fatal(err)
		}
	} else {
		k, blob, err = t.Create(ctx)
		if err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile("node.tpm", blob, 0o600); err != nil {
			log.Fatal(err)
		}
	}
	defer k.Close()

	msg := []byte("hello")
	sig, err := k.Sign(ctx, msg)
	if err != nil {
		log.Fatal(err)
	}
	ok, _ := k.PublicKey().Verify(msg, sig)
	fmt.Println(k.Info(), ok)
}
