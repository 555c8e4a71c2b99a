package daemon

// Wasm modules in the daemon (docs/wasm.md, "Orchestration"): the module
// runtime (package wasm) over this node's actors, pub-sub and file
// system, and its control plane, the deployment controller of package
// wasm/deploy, which watches /<root>/<node>/deploy/.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/api"
	"blocktree.dev/bt/api/serve"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
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

// DeployDir is the name of a node's deployment directory, under its node
// path.
const DeployDir = deploy.DirName

// ManifestExt ends the file names `bt run` gives manifests.
const ManifestExt = ".manifest"

// maxManifest bounds a manifest file.
const maxManifest = deploy.MaxManifest

// wasmService is the daemon's module runtime and its deployment
// controller.
type wasmService struct {
	node    paths.Path
	deploy  paths.Path // node/deploy
	rt      *wasm.Runtime
	ctl     *deploy.Controller
	fs      *fsService
	verify  *caps.Verifier
	signer  caps.Signer
	ctx     context.Context // ends when the service closes (streamed logs end)
	cancel  context.CancelFunc
	closeMu sync.Once
}

// startWasm builds the module runtime and the deployment controller.
func startWasm(ctx context.Context, r *repo.Repo, id *p2p.Identity, rt *actors.Runtime, router *msg.Router, ps *pubsub.PubSub,
	f *fsService, verifier *caps.Verifier, log *slog.Logger) (*wasmService, error) {
	w := &wasmService{node: r.Config.Node, fs: f, verify: verifier, signer: f.Signer()}
	var err error
	w.rt, err = wasm.New(ctx, wasm.Config{Actors: rt, Files: wasm.FSFiles(f.client), PubSub: ps, Node: r.Config.Node,
		CacheDir: filepath.Join(r.Dir, WasmCacheDir), Verifier: verifier, Log: log, Clock: time.Now})
	if err != nil {
		return nil, fmt.Errorf("daemon: wasm: %w", err)
	}
	node := r.Config.Node
	w.ctl, err = deploy.New(deploy.Config{Node: node, FS: f.client, Runtime: w.rt,
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
	w.deploy = w.ctl.Dir()
	w.ctx, w.cancel = context.WithCancel(context.Background())
	f.client.Notify(w.ctl.Notified)
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

// instanceInto fills e from the runtime's view of the instance.
func instanceInto(e *api.WasmInstance, in wasm.InstanceInfo) {
	e.Path, e.Module, e.State, e.Restarts = in.Path, in.Module, in.State, in.Restarts
	if in.LastError != "" {
		e.Reason = in.LastError
	}
	if !in.Started.IsZero() {
		e.Since = in.Started
	}
}

// rescan scans now and returns when done (for API calls that changed the
// directory).
func (w *wasmService) rescan() { w.ctl.Rescan() }

// ---- API ----

// routes serves /v1/wasm/ and hands everything else to next.
func (w *wasmService) routes(s *server, next http.Handler) http.Handler {
	mux := serve.New(s.log, apiError)
	serve.Unary(mux, api.RouteWasmRun, maxBody, w.run)
	serve.Unary(mux, api.RouteWasmPs, maxBody, w.ps)
	serve.Unary(mux, api.RouteWasmStop, maxBody, w.stop)
	serve.Stream(mux, api.RouteWasmLogs, w.logs, nil)
	mux.Handle("/", next)
	return mux
}

// restartPolicy parses a restart mode; "" is the runtime's default.
func restartPolicy(s string) (wasm.RestartPolicy, error) {
	switch s {
	case "", wasm.RestartAlways, wasm.RestartOnFailure, wasm.RestartNever:
		return wasm.RestartPolicy{Mode: s}, nil
	}
	return wasm.RestartPolicy{}, api.Errorf(api.KindInvalid, "restart %q: want always, on-failure or never", s)
}

// checkPaths checks that none of the paths of a request is missing.
func checkPaths(what string, ps []paths.Path) error {
	for _, p := range ps {
		if p.IsZero() {
			return api.Errorf(api.KindInvalid, "%s: an empty path", what)
		}
	}
	return nil
}

// manifestOf builds the manifest a WasmRunRequest asks for.
func (w *wasmService) manifestOf(req api.WasmRunRequest) (wasm.Manifest, error) {
	var m wasm.Manifest
	mod := req.Module
	if err := need(mod); err != nil {
		return m, err
	}
	name := req.Name
	if name == "" {
		name = strings.TrimSuffix(mod.Base(), ".wasm")
	}
	if err := paths.ValidComponent(name); err != nil || strings.HasPrefix(name, ".") {
		return m, api.Errorf(api.KindInvalid, "name %q: want a path component not starting with a dot (%v)", name, err)
	}
	m = wasm.Manifest{Name: name, Module: mod, Env: req.Env, MemoryLimit: req.Memory, Nodes: req.Nodes}
	for _, c := range []struct {
		what string
		ps   []paths.Path
	}{{"node", req.Nodes}, {"read", req.Read}, {"write", req.Write}, {"message", req.Message}, {"publish", req.Publish}} {
		if err := checkPaths(c.what, c.ps); err != nil {
			return m, err
		}
	}
	if len(m.Nodes) == 0 {
		m.Nodes = []paths.Path{w.node}
	}
	for _, n := range m.Nodes {
		if n.Depth() != 1 {
			return m, api.Errorf(api.KindInvalid, "node %s: want a node path /<root>/<name>", n)
		}
	}
	var err error
	if req.Deadline != "" {
		if m.Deadline, err = time.ParseDuration(req.Deadline); err != nil || m.Deadline <= 0 {
			return m, api.Errorf(api.KindInvalid, "deadline %q: want a positive duration such as 5s", req.Deadline)
		}
	}
	if m.Restart, err = restartPolicy(req.Restart); err != nil {
		return m, err
	}
	m.Rights.Read, m.Rights.Write, m.Rights.Message, m.Rights.Publish = req.Read, req.Write, req.Message, req.Publish
	return m, nil
}

// sign has the node key sign m with the first writecap this node holds
// (its node writecap, then hosting writecaps such as the root volume's)
// under which m verifies. When none does it still returns the manifest
// signed with the first, and verr says why nodes would refuse it; err is
// a failure to sign at all.
//
// The node key signs, not the host key: a manifest is a long-lived file,
// and one signed by the host key would stop verifying when its host
// certificate expires (30 days). Signing is rare (one per `bt run`), so
// opening the key in custody (a TPM) then is no hot path.
func (w *wasmService) sign(ctx context.Context, m wasm.Manifest) (sm *wasm.SignedManifest, verr, err error) {
	cands := []*caps.Writecap{w.fs.nodeW}
	if l, err := w.fs.loadHosted(); err == nil {
		for _, e := range l.Volumes {
			if hw, err := caps.Decode(e.Writecap); err == nil && w.verify.VerifyHolder(hw, w.fs.r.Config.NodeID, e.Path) == nil {
				cands = append(cands, hw)
			}
		}
	}
	var first *wasm.SignedManifest
	var firstErr error
	for _, wc := range cands {
		sm, err := wasm.Sign(ctx, m, w.signer, wc)
		if err != nil {
			if firstErr == nil && first == nil {
				firstErr = err
			}
			continue
		}
		verr := sm.Verify(w.verify)
		if verr == nil {
			return sm, nil, nil
		}
		if first == nil {
			first, firstErr = sm, verr
		}
	}
	if first == nil {
		return nil, nil, api.Errorf(api.KindDenied, "signing the manifest: %v", firstErr)
	}
	return first, firstErr, nil
}

func (w *wasmService) run(ctx context.Context, req api.WasmRunRequest) (api.WasmRunResult, error) {
	var none api.WasmRunResult
	m, err := w.manifestOf(req)
	if err != nil {
		return none, err
	}
	sm, refused, err := w.sign(ctx, m)
	if err != nil {
		return none, err
	}
	data, err := sm.Marshal()
	if err != nil {
		return none, fmt.Errorf("encoding the manifest: %w", err)
	}
	res := api.WasmRunResult{Name: m.Name, Signer: sm.Signer}
	if req.Print {
		res.Manifest = data
		if refused != nil {
			res.Warning = fmt.Sprintf("a node would refuse this manifest: %v", refused)
		}
		return res, nil
	}
	if refused != nil {
		return none, api.Errorf(api.KindDenied, "this node cannot sign a manifest with these rights: %v (its writecap covers %s)", refused, w.fs.nodeW.Prefix())
	}
	if a, err := w.fs.client.Walk(ctx, m.Module); err != nil {
		return none, fmt.Errorf("module %s: %w", m.Module, err)
	} else if a.Kind != fsys.KindFile {
		return none, api.Errorf(api.KindInvalid, "module %s is not a file", m.Module)
	}
	local := false
	for _, n := range m.Nodes {
		dir, _ := n.Join(DeployDir)
		file, _ := dir.Join(m.Name + ManifestExt)
		if _, err := w.fs.mkdirAll(ctx, dir, 0o755, true); err != nil {
			return none, err
		}
		if err := wasm.FSFiles(w.fs.client).WriteFile(ctx, file, data); err != nil {
			return none, fmt.Errorf("writing the manifest %s: %w", file, err)
		}
		res.Manifests = append(res.Manifests, file)
		local = local || n == w.node
	}
	if local {
		w.rescan()
	}
	return res, nil
}

func (w *wasmService) ps(ctx context.Context, _ api.None) ([]api.WasmInstance, error) {
	infos := map[string]wasm.InstanceInfo{}
	for _, in := range w.rt.Instances() {
		infos[in.Name] = in
	}
	out := []api.WasmInstance{}
	seen := map[string]bool{}
	for _, d := range w.ctl.Deployments() {
		file, _ := w.deploy.Join(d.File)
		e := api.WasmInstance{Name: d.Name, File: file, State: d.State, Reason: d.Reason, Since: d.Since}
		if d.Manifest != nil {
			e.Module, e.Signer = d.Manifest.Module, d.Manifest.Signer
		}
		if in, ok := infos[d.Name]; ok && d.Started {
			instanceInto(&e, in)
			seen[d.Name] = true
		}
		out = append(out, e)
	}
	for name, in := range infos {
		if !seen[name] {
			e := api.WasmInstance{Name: name}
			instanceInto(&e, in)
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b api.WasmInstance) int {
		return strings.Compare(a.Name+"\x00"+a.File.String(), b.Name+"\x00"+b.File.String())
	})
	return out, nil
}

func (w *wasmService) stop(ctx context.Context, req api.WasmStopRequest) (api.WasmStopResult, error) {
	var none api.WasmStopResult
	if req.Name == "" {
		return none, api.Errorf(api.KindInvalid, "stop: want a name (`bt ps` lists them)")
	}
	node := w.node
	if !req.Node.IsZero() {
		node = req.Node
	}
	dir, err := node.Join(DeployDir)
	if err != nil {
		return none, api.Errorf(api.KindInvalid, "%v", err)
	}
	file, err := w.manifestFile(ctx, dir, req.Name)
	if err != nil {
		return none, err
	}
	d, err := w.fs.client.Walk(ctx, dir)
	if err != nil {
		return none, err
	}
	if err := w.fs.client.Unlink(ctx, d.Ino, file.Base()); err != nil {
		return none, err
	}
	res := api.WasmStopResult{Name: req.Name, Removed: file}
	if node == w.node {
		w.rescan()
		res.Stopped = true
	}
	return res, nil
}

// manifestFile finds the manifest of name in dir: the file this node's
// watcher knows it from, else <name>.manifest, else the file whose
// manifest has that name.
func (w *wasmService) manifestFile(ctx context.Context, dir paths.Path, name string) (paths.Path, error) {
	if dir == w.deploy {
		var files []string
		for _, d := range w.ctl.Deployments() {
			if d.Name == name {
				files = append(files, d.File)
			}
		}
		if len(files) > 0 {
			slices.Sort(files)
			p, _ := dir.Join(files[0])
			return p, nil
		}
	}
	if paths.ValidComponent(name+ManifestExt) == nil {
		p, _ := dir.Join(name + ManifestExt)
		if _, err := w.fs.client.Walk(ctx, p); err == nil {
			return p, nil
		}
	}
	c := w.fs.client
	da, err := c.Walk(ctx, dir)
	if err != nil {
		return paths.Path{}, err
	}
	ents, err := c.Readdir(ctx, da.Ino)
	if err != nil {
		return paths.Path{}, err
	}
	for _, e := range ents {
		if e.Kind != fsys.KindFile || strings.HasPrefix(e.Name, ".") {
			continue
		}
		p, _ := dir.Join(e.Name)
		a, err := c.Getattr(ctx, e.Ino)
		if err != nil || a.Size > maxManifest {
			continue
		}
		data, err := wasm.FSFiles(w.fs.client).ReadFile(ctx, p)
		if err != nil {
			continue
		}
		if sm, err := wasm.DecodeManifest(data); err == nil && sm.Name == name {
			return p, nil
		}
	}
	return paths.Path{}, api.Errorf(api.KindNotFound, "no manifest named %q in %s", name, dir)
}

// logs is POST /v1/wasm/logs: a stream of WasmLogLine.
func (w *wasmService) logs(ctx context.Context, req api.WasmLogsRequest, out *serve.Events[api.WasmLogLine]) error {
	if !w.known(req.Name) {
		return api.Errorf(api.KindNotFound, "no module named %q on this node (`bt ps` lists them)", req.Name)
	}
	lines, next, cancel := w.rt.Logs(req.Name, req.Follow)
	defer func() {
		if cancel != nil {
			cancel()
		}
	}()
	for _, l := range lines {
		if out.Send(api.WasmLogLine{Event: "line", Line: l}) != nil {
			return nil
		}
	}
	if !req.Follow || next == nil {
		_ = out.Send(api.WasmLogLine{Event: "end"})
		return nil
	}
	out.Start()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.ctx.Done():
			return nil
		case l, ok := <-next:
			if !ok {
				_ = out.Send(api.WasmLogLine{Event: "end"})
				return nil
			}
			if out.Send(api.WasmLogLine{Event: "line", Line: l}) != nil {
				return nil
			}
		}
	}
}

// known reports whether name is deployed here or has an instance.
func (w *wasmService) known(name string) bool {
	for _, in := range w.rt.Instances() {
		if in.Name == name {
			return true
		}
	}
	for _, d := range w.ctl.Deployments() {
		if d.Name == name {
			return true
		}
	}
	return false
}
