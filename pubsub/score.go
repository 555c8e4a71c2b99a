package pubsub

import (
	"time"

	gossip "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Peer scoring (docs/pubsub.md#peer-scoring). The only score component is
// gossipsub's P4, invalid message deliveries: a domain's nodes are few and
// known, so no peer needs to earn standing (P1–P3 are off, and there is no
// positive score to build up before misbehaving), and one person's machines
// often share a public IP address (P6 is off). P7 (broken IWANT promises,
// early re-GRAFTs) is off too, because a node that is merely overloaded
// breaks promises; the resource manager and gossipsub's own limits bound
// what such a peer costs.
//
// With weight -10 a peer's P4 score is -10·n² after n invalid messages:
//
//	n = 1   -10   still within every threshold
//	n = 2   -40   below GossipThreshold: no gossip to or from it
//	n = 3   -90   below GraylistThreshold: every RPC from it is dropped
//
// The counter decays to 1 % in an hour (×0.99872 a second), so three
// strikes cost about 45 s of graylisting and a burst of 100 about 45
// minutes. Scores are kept for an hour after a peer disconnects.
const (
	invalidWeight     = -10
	invalidDecayTo    = time.Hour // the counter falls to DecayToZero (1 %) in this time
	gossipThreshold   = -10
	publishThreshold  = -50
	graylistThreshold = -80
	retainScore       = time.Hour
	// scoreInspectPeriod is how often PeerScores' snapshot is refreshed.
	scoreInspectPeriod = time.Second
)

func peerScoreParams() *gossip.PeerScoreParams {
	return &gossip.PeerScoreParams{
		Topics:            map[string]*gossip.TopicScoreParams{},
		AppSpecificScore:  func(peer.ID) float64 { return 0 },
		AppSpecificWeight: 1,
		DecayInterval:     gossip.DefaultDecayInterval,
		DecayToZero:       gossip.DefaultDecayToZero,
		RetainScore:       retainScore,
	}
}

func peerScoreThresholds() *gossip.PeerScoreThresholds {
	return &gossip.PeerScoreThresholds{
		GossipThreshold:   gossipThreshold,
		PublishThreshold:  publishThreshold,
		GraylistThreshold: graylistThreshold,
		AcceptPXThreshold: 100, // unreachable: peer exchange is off anyway
	}
}

// topicScoreParams are set on every topic this node subscribes to (the
// only topics on which it receives, so validates, messages).
func topicScoreParams() *gossip.TopicScoreParams {
	return &gossip.TopicScoreParams{
		SkipAtomicValidation: true, // P1–P3b stay off
		TopicWeight:          1,
		// gossipsub divides by the quantum even when P1's weight is
		// zero, so it must be set.
		TimeInMeshQuantum:              time.Second,
		InvalidMessageDeliveriesWeight: invalidWeight,
		InvalidMessageDeliveriesDecay:  gossip.ScoreParameterDecay(invalidDecayTo),
	}
}
