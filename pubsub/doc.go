// Package pubsub publishes and subscribes to topics named by paths, over
// gossipsub (go-libp2p-pubsub) on a p2p.Node's host. Publishing needs a
// writecap for the topic, and every node that relays a message checks it,
// so a peer without one cannot reach anyone. The wire format, the topic
// mapping and the scoring parameters are specified in docs/pubsub.md.
//
// # Model
//
// A topic is a path: /<root>/laptop/sensors/temp. A subscription is a
// paths.Pattern, "*" standing for one component and a final "..." for any
// number, zero included:
//
//	/<root>/laptop/sensors/temp    that topic only
//	/<root>/laptop/...             /<root>/laptop and everything below it
//	/<root>/*/sensors/temp         that topic on every node
//
// A pattern names its domain: a wildcard root ("/*/x") is refused with
// ErrPattern.
//
// Each message says who sent it. The publisher signs it once with its
// host key and it carries its host certificate (node key → host key), its
// node writecap (root → node key, for its node path) and, when that one
// does not cover the topic, the writecap that does. Every node that
// receives the message — subscriber or relay — runs the validator before
// delivering or forwarding it: the certificate must be valid now and its
// host key must have made the message's signature, and both writecaps
// must be held by the certificate's node key, be valid now, and cover the
// node path and the topic. A refused message goes no further and costs
// its sender peer score (gossipsub's P4): after three, a peer is
// graylisted and nothing it sends is processed. So Message.From is the
// publisher's proven node path.
//
// # Topics on gossipsub
//
// gossipsub topics are exact strings, so patterns are mapped onto them
// (docs/pubsub.md#topic-mapping). A publication to /r/n/a/b goes to its
// exact topic, to the subtree topic of its node path, the topic of the
// pattern "/r/n/...", and to the subtree topic of its root, "/r/...": at
// most three topics whatever its depth. A literal pattern subscribes to
// the exact topic; a pattern with wildcards to the subtree topic of the
// node path its literal prefix lies under (or of the root, when the
// prefix is the root), and filters with Pattern.Match. A subtree topic
// that no known peer subscribes to is skipped (gossipsub would deliver it
// to nobody). The copies of one publication carry the same signed data:
// the publisher signs once, and a receiver validates the first copy and
// accepts the others by the data's hash. A node that receives one
// publication by several topics delivers it once: duplicates are dropped
// by (publisher, seq).
//
// # Delivery
//
// Delivery is best effort, as gossipsub's is: Publish returns when the
// message is handed to gossipsub, not when anyone has it; a subscriber
// that is not yet meshed, is partitioned, or whose queue (Config.Buffer)
// is full misses messages, and nothing resends them. Messages of one
// publisher usually arrive in order but need not: Seq tells. A
// subscription hears of publications from the moment its peers learn of
// it — usually milliseconds, up to a gossipsub heartbeat (1 s) for a
// relay's mesh to form. Applications that need every message use calls
// (request and response) or the file system, not pub-sub.
//
// # Confidential topics
//
// Publish with WithReaders encrypts the payload (AES-256-GCM) under a key
// this publisher keeps per topic and reader set; the message carries the
// key's ID and the key wrapped to each reader's node key as a readcap
// (caps.Readcap). A subscriber holding one unwraps the key with
// Config.Decapsulate — its node key's ECDH, maybe in a TPM — once per key,
// and caches it; one without gets Message.Readable false and no payload.
// Relays see ciphertext and sizes only. A new reader set makes a new key.
//
// # Lifecycle
//
//	node, _ := p2p.New(ctx, id, p2pConfig)        // and go node.Serve(ctx)
//	ps, err := pubsub.New(ctx, node, id, pubsub.Config{Decapsulate: nodeKey.ECDH})
//	sub, err := ps.Subscribe(ctx, paths.MustParsePattern("/<root>/laptop/..."))
//	err = ps.Publish(ctx, topic, payload)         // ErrDenied without a writecap
//	msg, err := sub.Next(ctx)                     // blocks until a message or ctx ends
//	sub.Cancel()
//	ps.Close()                                    // before node.Close()
//
// # Errors
//
// Errors wrap one of ErrDenied (with the caps error of each writecap
// tried), ErrTooLarge, ErrPattern, ErrReaders, ErrCanceled, ErrClosed, or
// the context's error; branch with errors.Is.
//
// # Concurrency and limits
//
// Every method of PubSub and Subscription is safe for concurrent use;
// Message values are shared between a node's Subscriptions and must not
// be modified. Messages are validated and queued to Subscriptions in
// gossipsub's validation workers, which never block on a Subscription; one
// goroutine unwraps confidential topic keys and one closes idle topics,
// and Close waits for both. An encoded message is at most
// Config.MaxMessage (1 MiB by default); a confidential message has at
// most MaxReaders readers. Validation, queues and caches are bounded:
// gossipsub's validation and per-peer queues hold 256 entries, the
// duplicate filter the last 65,536 publications, the certificate, verdict
// and key caches 1,024, 4,096 and 4,096 entries.
package pubsub
