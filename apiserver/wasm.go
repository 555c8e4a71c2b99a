package apiserver

// The /v1/wasm/ endpoints (docs/wasm.md, "Orchestration"): over the
// module runtime (package wasm) and the deployment controller of package
// wasm/deploy, which watches /<root>/<node>/deploy/.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"blocktree.dev/bt/api"
	"blocktree.dev/bt/api/serve"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/wasm"
	"blocktree.dev/bt/wasm/deploy"
)

// DeployDir is the name of a node's deployment directory, under its node
// path.
const DeployDir = deploy.DirName

// ManifestExt ends the file names `bt run` gives manifests.
const ManifestExt = ".manifest"

// maxManifest bounds a manifest file.
const maxManifest = deploy.MaxManifest

// wasmAPI answers the /v1/wasm/ endpoints over the module runtime and
// the deployment controller.
type wasmAPI struct {
	node   paths.Path
	deploy paths.Path // node/deploy
	rt     *wasm.Runtime
	ctl    *deploy.Controller
	fs     *fsAPI
	verify *caps.Verifier
	signer caps.Signer
	done   <-chan struct{} // closed when the runtime stops (followed logs end)
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

// register adds the /v1/wasm/ routes to mux.
func (w *wasmAPI) register(mux *serve.Mux) {
	serve.Unary(mux, api.RouteWasmRun, maxBody, w.run)
	serve.Unary(mux, api.RouteWasmPs, maxBody, w.ps)
	serve.Unary(mux, api.RouteWasmStop, maxBody, w.stop)
	serve.Stream(mux, api.RouteWasmLogs, w.logs, nil)
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
func (w *wasmAPI) manifestOf(req api.WasmRunRequest) (wasm.Manifest, error) {
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
func (w *wasmAPI) sign(ctx context.Context, m wasm.Manifest) (sm *wasm.SignedManifest, verr, err error) {
	cands := []*caps.Writecap{w.fs.nodeW}
	if l, err := w.fs.LoadHosted(); err == nil {
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

func (w *wasmAPI) run(ctx context.Context, req api.WasmRunRequest) (api.WasmRunResult, error) {
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
		w.ctl.Rescan()
	}
	return res, nil
}

func (w *wasmAPI) ps(ctx context.Context, _ api.None) ([]api.WasmInstance, error) {
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

func (w *wasmAPI) stop(ctx context.Context, req api.WasmStopRequest) (api.WasmStopResult, error) {
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
		w.ctl.Rescan()
		res.Stopped = true
	}
	return res, nil
}

// manifestFile finds the manifest of name in dir: the file this node's
// watcher knows it from, else <name>.manifest, else the file whose
// manifest has that name.
func (w *wasmAPI) manifestFile(ctx context.Context, dir paths.Path, name string) (paths.Path, error) {
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
func (w *wasmAPI) logs(ctx context.Context, req api.WasmLogsRequest, out *serve.Events[api.WasmLogLine]) error {
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
		case <-w.done:
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
func (w *wasmAPI) known(name string) bool {
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
