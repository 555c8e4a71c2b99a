// Package service is a node's file system service (docs/fs.md,
// "Hosting"): the fsys.Client that every API call, mount and module uses;
// the volumes this node hosts (fsys/host), listed in <repo>/fs/hosted.json
// and served to peers (fsys/remote); the default readcaps it grants
// domain members on the root volume; and the FUSE mounts.
//
// Lifecycle: New builds the client, opens and serves the hosted volumes
// (the node that holds the root key hosts the domain's root volume by
// default), and starts the background work (granting members, learning
// the root volume's host after a join). Serve announces the hosted
// volumes to peers until its context ends, and returns what
// remote.Server.Serve returns. Close unmounts every mount, stops serving,
// closes the client and the hosted volumes and waits for the service's
// goroutines; it is idempotent. The methods are safe for concurrent use.
package service
