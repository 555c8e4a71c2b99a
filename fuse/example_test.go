package fuse_test

import (
	"context"
	"errors"
	"log"
	"os/signal"
	"syscall"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fuse"
	"blocktree.dev/bt/paths"
)

// The daemon mounts its client's namespace and keeps it until it stops.
func ExampleMount() {
	var (
		client fsys.FS  // the node's *client.Client
		self   paths.ID // the node's domain root
	)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	m, err := fuse.Mount(ctx, "/mnt/bt", client, fuse.Options{Self: self})
	switch {
	case errors.Is(err, fuse.ErrNoFUSE):
		log.Fatal("no FUSE here: modprobe fuse, or pass /dev/fuse into the container")
	case errors.Is(err, fuse.ErrMountPoint):
		log.Fatalf("%v (bt mount needs an empty directory)", err)
	case err != nil:
		log.Fatal(err)
	}
	// /mnt/bt/<self>/… is the domain. SIGTERM ends ctx, which unmounts.
	m.Wait()
}
