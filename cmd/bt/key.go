package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"blocktree.dev/bt/internal/atomicfile"
)

func keyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Back up and restore the domain's root key",
	}
	var pass passphraseSource
	export := &cobra.Command{
		Use:   "export FILE",
		Short: "Write a sealed copy of the root key to FILE (mode 0600) for backup",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.openRepo()
			if err != nil {
				return err
			}
			data, err := r.ExportRootKey(func() ([]byte, error) { return pass.get("Passphrase to seal the exported key", true) })
			if err != nil {
				return err
			}
			if _, err := os.Stat(args[0]); err == nil {
				return fmt.Errorf("key export: %s exists; remove it or choose another file", args[0])
			}
			if err := atomicfile.Write(args[0], data, 0o600); err != nil {
				return fmt.Errorf("key export: %w", err)
			}
			return printKeyResult(cmd, g, "exported", args[0], string(r.Config.Root))
		},
	}
	export.Flags().StringVar(&pass.file, "passphrase-file", "", "passphrase to seal the export, if the root key is stored unsealed")
	addJSON(export, g)
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Store a root key backup from FILE in this node's repo",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.openRepo()
			if err != nil {
				return err
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("key import: %w", err)
			}
			if err := r.ImportRootKey(data, func() ([]byte, error) { return pass.get("Passphrase of the key backup", false) }); err != nil {
				return err
			}
			return printKeyResult(cmd, g, "imported", args[0], string(r.Config.Root))
		},
	}
	imp.Flags().StringVar(&pass.file, "passphrase-file", "", "read the backup's passphrase from the first line of this file")
	addJSON(imp, g)
	cmd.AddCommand(export, imp)
	return cmd
}

func printKeyResult(cmd *cobra.Command, g *globals, what, file, root string) error {
	out := cmd.OutOrStdout()
	if g.json {
		return json.NewEncoder(out).Encode(map[string]string{"result": what, "file": file, "root": root})
	}
	fmt.Fprintf(out, "%s root key %s (%s)\n", what, root, file)
	return nil
}
