package daemon

// Wasm modules in the daemon (docs/wasm.md, "Orchestration"): the module
// runtime (package wasm) over this node's actors, pub-sub and file
// system, and its control plane, the deployment controller of package
// wasm/deploy, which watches /<root>/<node>/deploy/. Their /v1/wasm/
// endpoints are in package apiserver.

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/caps"
	fssvc "blocktree.dev/bt/fsys/service"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
	"blocktree.dev/bt/repo"
	"blocktree.dev/bt/wasm"
	"blocktree.dev/bt/wasm/deploy"
)

// WasmCacheDir is the compiled-module cache's directory in the repo.
const WasmCacheDir = "wasm-cache"

// wasmService is the daemon's module runtime and its deployment
// controller.
type wasmService struct {
	rt      *wasm.Runtime
	ctl     *deploy.Controller
	ctx     context.Context // ends when the service closes (streamed logs end)
	cancel  context.CancelFunc
	closeMu sync.Once
}

// startWasm builds the module runtime and the deployment controller.
func startWasm(ctx context.Context, r *repo.Repo, id *p2p.Identity, rt *actors.Runtime, router *msg.Router, ps *pubsub.PubSub,
	f *fssvc.Service, verifier *caps.Verifier, log *slog.Logger) (*wasmService, error) {
	w := &wasmService{}
	var err error
	w.rt, err = wasm.New(ctx, wasm.Config{Actors: rt, Files: wasm.FSFiles(f.Client()), PubSub: ps, Node: r.Config.Node,
		CacheDir: filepath.Join(r.Dir, WasmCacheDir), Verifier: verifier, Log: log, Clock: time.Now})
	if err != nil {
		return nil, fmt.Errorf("daemon: wasm: %w", err)
	}
	node := r.Config.Node
	w.ctl, err = deploy.New(deploy.Config{Node: node, FS: f.Client(), Runtime: w.rt,
		MakeDir: func(ctx context.Context, p paths.Path) error { _, err := f.MkdirAll(ctx, p, 0o755); return err },
		Verify: func(sm *wasm.SignedManifest) error {
			if err := sm.Verify(verifier); err != nil {
				return fmt.Errorf("the manifest does not verify: %v", err)
			}
			if sm.Writecap != nil && sm.Writecap.Root() != node.Root() {
				return fmt.Errorf("signed under another domain's root %s, not this domain's %s", sm.Writecap.Root(), node.Root())
			}
			return nil
		},
		Expose: deploy.MessageBridge(node, router, rt, w.rt, log.With("subsystem", "wasm")), Log: log.With("subsystem", "wasm")})
	if err != nil {
		w.rt.Close()
		return nil, fmt.Errorf("daemon: wasm: %w", err)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	f.Client().Notify(w.ctl.Notified)
	return w, nil
}

// Serve runs the deployment controller until ctx ends.
func (w *wasmService) Serve(ctx context.Context) error { return w.ctl.Serve(ctx) }

// Close stops the controller and every instance. Idempotent.
func (w *wasmService) Close() error {
	w.closeMu.Do(func() {
		w.cancel()
		w.ctl.Close()
		w.rt.Close()
	})
	return nil
}
