package wasm

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
)

// FuzzDecodeManifest: any input either fails to decode or decodes to a
// manifest that re-encodes to the same bytes and passes Validate; Verify
// never panics.
func FuzzDecodeManifest(f *testing.F) {
	if b, err := os.ReadFile("testdata/manifest-v1.cbor"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sm, err := DecodeManifest(data)
		if err != nil {
			return
		}
		if err := sm.Validate(); err != nil {
			t.Fatalf("decoded an invalid manifest: %v", err)
		}
		again, err := sm.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs")
		}
		_ = sm.Verify(caps.NewVerifier())
	})
}

// The frozen example manifest (testdata/manifest-v1.cbor) was signed at
// 2026-11-27 by a fixed key; every build must still decode it, re-encode
// it byte for byte, and verify its signature. Its writecap may have
// expired by now, so rights are checked at its signing time.
func TestFrozenManifest(t *testing.T) {
	data, err := os.ReadFile("testdata/manifest-v1.cbor")
	if err != nil {
		t.Fatal(err)
	}
	sm, err := DecodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	again, err := sm.Marshal()
	if err != nil || !bytes.Equal(again, data) {
		t.Fatalf("re-encoding differs (%v)", err)
	}
	if sm.Name != "echo" || sm.Restart.Mode != RestartOnFailure || sm.Restart.MaxRestarts != 5 ||
		sm.MemoryLimit != 32<<20 || sm.Deadline != 5*time.Second || sm.Env["GREETING"] != "hello" || len(sm.Rights.Write) != 1 {
		t.Fatalf("decoded %+v", sm.Manifest)
	}
	at := sm.Writecap.NotBefore().Add(time.Hour)
	if err := sm.Verify(caps.NewVerifier(caps.WithClock(func() time.Time { return at }))); err != nil {
		t.Fatal(err)
	}
}

// TestMakeFrozenManifest rewrites testdata/manifest-v1.cbor when
// BT_WRITE_FROZEN=1 (only when the format changes version).
func TestMakeFrozenManifest(t *testing.T) {
	if os.Getenv("BT_WRITE_FROZEN") == "" {
		t.Skip("set BT_WRITE_FROZEN=1 to rewrite the frozen manifest")
	}
	l := newLocal(t)
	now := time.Now()
	w, err := caps.Issue(context.Background(), l.d.Root, nil, l.admin.id, l.d.Path(t), now.Add(-time.Hour), now.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sm, err := Sign(context.Background(), Manifest{
		Name: "echo", Module: l.d.Path(t, "mods", "echo.wasm"), Nodes: []paths.Path{l.node},
		Restart: RestartPolicy{Mode: RestartOnFailure, MaxRestarts: 5, Backoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second},
		Env:     map[string]string{"GREETING": "hello"}, MemoryLimit: 32 << 20, Deadline: 5 * time.Second,
		Rights: Rights{Read: []paths.Path{l.d.Path(t, "data")}, Write: []paths.Path{l.d.Path(t, "data", "out")},
			Message: []paths.Path{l.d.Path(t, "n")}, Publish: []paths.Path{l.d.Path(t, "events")}},
	}, l.admin.key, w)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sm.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("testdata/manifest-v1.cbor", b, 0o644); err != nil {
		t.Fatal(err)
	}
}
