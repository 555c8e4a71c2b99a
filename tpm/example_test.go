package tpm_test

import (
	"fmt"

	"blocktree.dev/bt/tpm"
)

// The --tpm flag's values, parsed once at the edge.
func ExampleParseDevice() {
	for _, s := range []string{"auto", "none", "/dev/tpmrm0", "tcp:127.0.0.1:2321", "tcp:nowhere"} {
		d, err := tpm.ParseDevice(s)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Printf("%s: auto=%v none=%v path=%q addr=%q\n", d, d.Auto, d.None, d.Path, d.Addr)
	}
	// Output:
	// auto: auto=true none=false path="" addr=""
	// none: auto=false none=true path="" addr=""
	// /dev/tpmrm0: auto=false none=false path="/dev/tpmrm0" addr=""
	// tcp:127.0.0.1:2321: auto=false none=false path="" addr="127.0.0.1:2321"
	// error: tpm: "tcp:nowhere": want tcp:HOST:PORT
}
