package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"golang.org/x/term"
)

var errNoPassphrase = errors.New("no passphrase: use --passphrase-file FILE or set BT_PASSPHRASE (or run on a terminal to be asked)")

// passphraseSource finds a passphrase: a file, $BT_PASSPHRASE, or a prompt
// on the terminal, in that order.
type passphraseSource struct {
	file string
}

// get returns the passphrase. confirm asks twice on a terminal (for a new
// passphrase). It never returns an empty passphrase without an error.
func (s passphraseSource) get(prompt string, confirm bool) ([]byte, error) {
	if s.file != "" {
		data, err := os.ReadFile(s.file)
		if err != nil {
			return nil, fmt.Errorf("passphrase file: %w", err)
		}
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[:i]
		}
		data = bytes.TrimSuffix(data, []byte("\r"))
		if len(data) == 0 {
			return nil, fmt.Errorf("passphrase file %s is empty", s.file)
		}
		return data, nil
	}
	if p := os.Getenv("BT_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, errNoPassphrase
	}
	read := func(p string) ([]byte, error) {
		fmt.Fprint(os.Stderr, p)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		return b, err
	}
	p, err := read(prompt + ": ")
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, errors.New("empty passphrase")
	}
	if confirm {
		again, err := read("Repeat " + prompt + ": ")
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(p, again) {
			return nil, errors.New("passphrases do not match")
		}
	}
	return p, nil
}
