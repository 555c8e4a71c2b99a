package deploy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/wasm"
)

const testRoot = "12D3KooWGB87QGrjoC1gtR9AuG6MFNGNuKEFwoefq42j6K5jsLda"

func mustPath(t *testing.T, s string) paths.Path {
	t.Helper()
	p, err := paths.Parse("/" + testRoot + s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeChecks decode "name[@node][!]" manifests: @node names the only node
// it is for, a trailing ! fails verification, "garbage" does not decode.
func fakeChecks(t *testing.T) Checks {
	return Checks{
		Decode: func(data []byte) (*wasm.SignedManifest, error) {
			s := string(data)
			if s == "garbage" {
				return nil, errors.New("not CBOR")
			}
			sm := &wasm.SignedManifest{}
			if strings.HasSuffix(s, "!") {
				s, sm.Sig = strings.TrimSuffix(s, "!"), []byte("bad")
			}
			name, node, ok := strings.Cut(s, "@")
			sm.Name = name
			if ok {
				sm.Nodes = []paths.Path{mustPath(t, "/"+node)}
			}
			return sm, nil
		},
		Verify: func(sm *wasm.SignedManifest) error {
			if string(sm.Sig) == "bad" {
				return errors.New("the manifest does not verify: bad signature")
			}
			return nil
		},
	}
}

// step is one scan: the directory's files (name=content@version), what the
// starts it asks for return, and the actions and states expected.
type step struct {
	at       time.Duration // since the test's start
	files    []string      // "file=content@version"; an empty content is an empty file
	startErr map[string]error
	want     []string // actions: "start file", "retry file", "stop file", "report file"
	states   []string // "file:state" after the step ("file:running" when started; "none": no file); nil: not checked
}

func TestReconcile(t *testing.T) {
	busy := errors.New("name still held")
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"new file starts", []step{
			{files: []string{"a=echo@1"}, want: []string{"start a"}, states: []string{"a:running"}},
			{files: []string{"a=echo@1"}, states: []string{"a:running"}},
		}},
		{"removed file stops", []step{
			{files: []string{"a=echo@1"}, want: []string{"start a"}},
			{files: nil, want: []string{"stop a"}, states: []string{"none"}},
		}},
		{"changed file restarts", []step{
			{files: []string{"a=echo@1"}, want: []string{"start a"}},
			{files: []string{"a=echo2@2"}, want: []string{"stop a", "start a"}, states: []string{"a:running"}},
		}},
		{"same bytes rewritten change nothing", []step{
			{files: []string{"a=echo@1"}, want: []string{"start a"}},
			{files: []string{"a=echo@2"}, states: []string{"a:running"}},
		}},
		{"empty file waits", []step{
			{files: []string{"a=@1"}, states: []string{"none"}},
			{files: []string{"a=echo@2"}, want: []string{"start a"}, states: []string{"a:running"}},
		}},
		{"undecodable is refused, not started", []step{
			{files: []string{"a=garbage@1"}, want: []string{"report a"}, states: []string{"a:refused"}},
			{files: []string{"a=garbage@1"}, states: []string{"a:refused"}},
		}},
		{"unverified is refused", []step{
			{files: []string{"a=echo!@1"}, want: []string{"report a"}, states: []string{"a:refused"}},
		}},
		{"for other nodes is ignored, before verifying", []step{
			{files: []string{"a=echo@desk!@1"}, want: []string{"report a"}, states: []string{"a:ignored"}},
		}},
		{"for this node starts", []step{
			{files: []string{"a=echo@laptop@1"}, want: []string{"start a"}, states: []string{"a:running"}},
		}},
		{"refused changed file stops the old", []step{
			{files: []string{"a=echo@1"}, want: []string{"start a"}},
			{files: []string{"a=garbage@2"}, want: []string{"report a", "stop a"}, states: []string{"a:refused"}},
		}},
		{"name clash: the first file wins, the other starts when it goes", []step{
			{files: []string{"a=echo@1", "b=echo@1"}, want: []string{"start a", "report b"}, states: []string{"a:running", "b:refused"}},
			{files: []string{"a=echo@1", "b=echo@1"}, states: []string{"a:running", "b:refused"}},
			{files: []string{"b=echo@1"}, want: []string{"stop a", "start b"}, states: []string{"b:running"}},
		}},
		{"failed start is retried with back-off", []step{
			{files: []string{"a=echo@1"}, startErr: map[string]error{"a": busy}, want: []string{"start a"}, states: []string{"a:failed"}},
			{at: time.Second, files: []string{"a=echo@1"}, states: []string{"a:failed"}},
			{at: RetryMin, files: []string{"a=echo@1"}, startErr: map[string]error{"a": busy}, want: []string{"retry a"}, states: []string{"a:failed"}},
			{at: RetryMin + RetryMin, files: []string{"a=echo@1"}, states: []string{"a:failed"}}, // back-off doubled
			{at: RetryMin + 2*RetryMin, files: []string{"a=echo@1"}, want: []string{"retry a"}, states: []string{"a:running"}},
		}},
		{"runtime refusal stays refused", []step{
			{files: []string{"a=echo@1"}, startErr: map[string]error{"a": fmt.Errorf("no: %w", wasm.ErrRights)}, want: []string{"start a", "report a"}, states: []string{"a:refused"}},
			{at: time.Hour, files: []string{"a=echo@1"}, states: []string{"a:refused"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := mustPath(t, "/laptop")
			dir := mustPath(t, "/laptop/deploy")
			r := NewReconciler(node, dir, fakeChecks(t))
			t0 := time.Unix(1_700_000_000, 0)
			for i, st := range tc.steps {
				now := t0.Add(st.at)
				var files []File
				reads := map[string]Read{}
				for _, f := range st.files {
					name, rest, _ := strings.Cut(f, "=")
					i := strings.LastIndex(rest, "@")
					content := rest[:i]
					var v uint64
					fmt.Sscan(rest[i+1:], &v)
					file := File{Name: name, Version: v, Size: uint64(len(content))}
					files = append(files, file)
					if r.NeedsRead(file) {
						reads[name] = Read{Data: []byte(content)}
					}
				}
				var got []string
				acts := r.Reconcile(now, files, reads)
				for j := 0; j < len(acts); j++ {
					a := acts[j]
					switch a.Kind {
					case Start:
						if a.Retry {
							got = append(got, "retry "+a.File)
						} else {
							got = append(got, "start "+a.File)
						}
						if rep, ok := r.Started(a.File, st.startErr[a.File], now); ok {
							acts = append(acts, rep)
						}
					case Stop:
						got = append(got, "stop "+a.File)
					case Report:
						got = append(got, "report "+a.File)
					}
				}
				if strings.Join(got, ",") != strings.Join(st.want, ",") {
					t.Fatalf("step %d: actions %v, want %v", i, got, st.want)
				}
				var states []string
				for _, d := range r.Deployments() {
					s := d.State
					if d.Started {
						s = "running"
					}
					states = append(states, d.File+":"+s)
				}
				if st.states != nil {
					if st.states[0] == "none" {
						st.states = nil
					}
					if strings.Join(states, ",") != strings.Join(st.states, ",") {
						t.Fatalf("step %d: states %v, want %v", i, states, st.states)
					}
				}
			}
		})
	}
}

func TestLimits(t *testing.T) {
	node := mustPath(t, "/laptop")
	r := NewReconciler(node, mustPath(t, "/laptop/deploy"), fakeChecks(t))
	huge := File{Name: "big", Version: 1, Size: MaxManifest + 1}
	if r.NeedsRead(huge) {
		t.Fatal("a file over MaxManifest is to be read")
	}
	var files []File
	reads := map[string]Read{}
	for i := range MaxDeployments + 1 {
		f := File{Name: fmt.Sprintf("m%04d", i), Version: 1, Size: 5}
		files = append(files, f)
		reads[f.Name] = Read{Data: []byte(fmt.Sprintf("n%04d", i))}
	}
	files = append(files, huge)
	r.Reconcile(time.Now(), files, reads)
	refused := 0
	for _, d := range r.Deployments() {
		if d.State == StateRefused {
			refused++
		}
	}
	if refused != 3 { // "big" (over the size; it sorts first), and m0255 and m0256 (over the count)
		t.Fatalf("%d refused, want 3", refused)
	}
}
