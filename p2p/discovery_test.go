package p2p

import (
	"net"
	"testing"

	"github.com/libp2p/go-libp2p-kbucket/peerdiversity"
	ma "github.com/multiformats/go-multiaddr"
)

func TestIPDiversityFilter(t *testing.T) {
	f := newIPDiversityFilter(nil)
	group := func(ip string) peerdiversity.PeerIPGroupKey { return peerdiversity.IPGroupKey(net.ParseIP(ip)) }
	for _, tc := range []struct {
		ip     string
		exempt bool
	}{
		{"192.168.1.20", true}, {"10.1.2.3", true}, {"172.20.0.1", true}, {"169.254.3.4", true},
		{"100.100.1.1", true}, {"fd00::1", true}, {"fe80::1", true},
		{"127.0.0.1", false}, {"8.8.8.8", false}, {"1.2.3.4", false},
	} {
		if got := exempt(group(tc.ip)); got != tc.exempt {
			t.Errorf("exempt(%s → %q) = %v, want %v", tc.ip, group(tc.ip), got, tc.exempt)
		}
	}
	pub := peerdiversity.PeerGroupInfo{Cpl: 1, IPGroupKey: group("1.2.3.4")}
	for i := range diversityMaxPerCpl {
		if !f.Allow(pub) {
			t.Fatalf("peer %d of a public group refused", i)
		}
		f.Increment(pub)
	}
	if f.Allow(pub) {
		t.Fatalf("more than %d peers per cpl from one public group allowed", diversityMaxPerCpl)
	}
	other := pub
	other.Cpl = 2
	for range diversityMaxForTable - diversityMaxPerCpl {
		if !f.Allow(other) {
			t.Fatal("table limit reached early")
		}
		f.Increment(other)
		other.Cpl++
	}
	if f.Allow(other) {
		t.Fatalf("more than %d peers in the table from one public group allowed", diversityMaxForTable)
	}
	f.Decrement(pub)
	if !f.Allow(pub) {
		t.Fatal("Decrement did not free a slot")
	}
	lan := peerdiversity.PeerGroupInfo{Cpl: 1, IPGroupKey: group("192.168.1.2")}
	for range 50 {
		if !f.Allow(lan) {
			t.Fatal("LAN peer refused")
		}
		f.Increment(lan)
	}
}

func TestWithoutLoopback(t *testing.T) {
	in := []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/1"), ma.StringCast("/ip6/::1/udp/1/quic-v1"),
		ma.StringCast("/ip4/192.168.1.2/tcp/4737"), ma.StringCast("/ip4/8.8.8.8/udp/4737/quic-v1")}
	out := withoutLoopback(in)
	if len(out) != 2 || !out[0].Equal(in[2]) || !out[1].Equal(in[3]) {
		t.Fatalf("withoutLoopback = %v", out)
	}
}
