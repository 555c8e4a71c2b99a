package serve

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"blocktree.dev/bt/api"
)

// MaxBody bounds a request body unless a route says otherwise.
const MaxBody = 1 << 20

// Mux is an http.Handler that serves api.Routes registered with Unary,
// Upload, Stream and Download, and any other handler registered with
// Handle. It is safe for concurrent use once registration is done.
type Mux struct {
	mux     *http.ServeMux
	log     *slog.Logger
	errorOf func(error) *api.Error
}

// New returns an empty Mux that logs failed requests at debug level to log
// and turns a handler's error into the API error the client sees with
// errorOf (nil: an *api.Error as it is, anything else internal). errorOf
// must not return nil.
func New(log *slog.Logger, errorOf func(error) *api.Error) *Mux {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if errorOf == nil {
		errorOf = func(err error) *api.Error {
			var ae *api.Error
			if errors.As(err, &ae) {
				return ae
			}
			return api.Errorf(api.KindInternal, "%v", err)
		}
	}
	return &Mux{mux: http.NewServeMux(), log: log, errorOf: errorOf}
}

// Handle registers h for pattern, as http.ServeMux does.
func (m *Mux) Handle(pattern string, h http.Handler) { m.mux.Handle(pattern, h) }

func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.mux.ServeHTTP(w, r) }

// Unary registers f as the handler of route r, a Unary route: the request
// is decoded (from a body of at most limit bytes, or the query), f's answer
// encoded as JSON, and f's error written as the API error it is.
func Unary[Req, Resp any](mux *Mux, r api.Route[Req, Resp], limit int64, f func(context.Context, Req) (Resp, error)) {
	info := r.Info()
	mux.mux.HandleFunc(r.Pattern(), func(w http.ResponseWriter, hr *http.Request) {
		hr.Body = http.MaxBytesReader(w, hr.Body, limit)
		req, err := decodeRequest[Req](info, hr)
		var resp Resp
		if err == nil {
			resp, err = f(hr.Context(), req)
		}
		if err != nil {
			mux.Fail(w, hr, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

// Upload registers f as the handler of the Upload route r: the request
// comes from the query, and f reads the raw body.
func Upload[Req, Resp any](mux *Mux, r api.Route[Req, Resp], f func(context.Context, Req, io.Reader) (Resp, error)) {
	info := r.Info()
	mux.mux.HandleFunc(r.Pattern(), func(w http.ResponseWriter, hr *http.Request) {
		req, err := decodeRequest[Req](info, hr)
		var resp Resp
		if err == nil {
			resp, err = f(hr.Context(), req, hr.Body)
		}
		if err != nil {
			mux.Fail(w, hr, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

// Events is the answer of a Stream route: JSON lines, each flushed as it
// is sent; like the http.ResponseWriter under it, not safe for concurrent
// use. The 200 status goes with the first line (or start); an error
// before it is answered with the error's status.
type Events[Ev any] struct {
	w       http.ResponseWriter
	f       http.Flusher
	enc     *json.Encoder
	started bool
}

// Start sends the status and headers now: from here on an error is
// reported in the stream.
func (e *Events[Ev]) Start() {
	e.begin()
	e.flush()
}

func (e *Events[Ev]) begin() {
	if !e.started {
		e.started = true
		e.w.Header().Set("Content-Type", "application/x-ndjson")
		e.w.WriteHeader(http.StatusOK)
	}
}

func (e *Events[Ev]) flush() {
	if e.f != nil {
		e.f.Flush()
	}
}

// Send writes one line and flushes it; an error means the client went away.
func (e *Events[Ev]) Send(ev Ev) error {
	e.begin()
	if err := e.enc.Encode(ev); err != nil {
		return err
	}
	e.flush()
	return nil
}

// Stream registers f as the handler of the Stream route r. f sends the
// lines and returns when the stream ends (its context ends when the client
// goes away or the daemon shuts down). An error f returns before the first
// line is answered as the API error it is; one after is sent as the line
// failed makes of it, or, with failed nil, just ends the stream.
func Stream[Req, Ev any](mux *Mux, r api.Route[Req, Ev], f func(context.Context, Req, *Events[Ev]) error, failed func(*api.Error) Ev) {
	info := r.Info()
	mux.mux.HandleFunc(r.Pattern(), func(w http.ResponseWriter, hr *http.Request) {
		hr.Body = http.MaxBytesReader(w, hr.Body, MaxBody)
		req, err := decodeRequest[Req](info, hr)
		if err != nil {
			mux.Fail(w, hr, err)
			return
		}
		fl, _ := w.(http.Flusher)
		ev := &Events[Ev]{w: w, f: fl, enc: json.NewEncoder(w)}
		err = f(hr.Context(), req, ev)
		switch {
		case err == nil:
		case !ev.started:
			mux.Fail(w, hr, err)
		case failed != nil:
			ae := mux.errorOf(err)
			mux.log.Debug("stream failed", "path", hr.URL.Path, "kind", ae.Kind, "err", ae.Message)
			_ = ev.Send(failed(ae))
		}
	})
}

// Download registers f as the handler of the Download route r: f writes
// the raw answer to out. An error before the first byte is answered as the
// API error it is; one after goes in the api.TrailerError trailer.
func Download[Req any](mux *Mux, r api.Route[Req, api.None], f func(context.Context, Req, *RawWriter) error) {
	info := r.Info()
	mux.mux.HandleFunc(r.Pattern(), func(w http.ResponseWriter, hr *http.Request) {
		hr.Body = http.MaxBytesReader(w, hr.Body, MaxBody)
		req, err := decodeRequest[Req](info, hr)
		if err != nil {
			mux.Fail(w, hr, err)
			return
		}
		w.Header().Set("Trailer", api.TrailerError)
		out := &RawWriter{w: w}
		err = f(hr.Context(), req, out)
		switch {
		case err == nil:
			out.Start()
		case !out.started:
			mux.Fail(w, hr, err)
		default:
			b, _ := json.Marshal(mux.errorOf(err))
			w.Header().Set(api.TrailerError, string(b))
		}
	})
}

// RawWriter sends the 200 header before the first byte of a raw answer, so
// an error before that can still be answered with an error status.
type RawWriter struct {
	w       http.ResponseWriter
	started bool
}

// Header is the answer's header, to set before the first byte.
func (rw *RawWriter) Header() http.Header { return rw.w.Header() }

// Start sends the 200 status and headers now.
func (rw *RawWriter) Start() {
	if rw.started {
		return
	}
	rw.started = true
	rw.w.Header().Set("Content-Type", "application/octet-stream")
	rw.w.WriteHeader(http.StatusOK)
}

func (rw *RawWriter) Write(b []byte) (int, error) {
	rw.Start()
	return rw.w.Write(b)
}

// decodeRequest decodes the request of a route: nothing for api.None, the
// query for a GET or an Upload, else the JSON body (unknown fields and
// trailing data refused).
func decodeRequest[Req any](info api.RouteInfo, r *http.Request) (Req, error) {
	var req Req
	if _, none := any(req).(api.None); none {
		return req, nil
	}
	if info.Method == http.MethodGet || info.Shape == api.Upload {
		qs, ok := any(&req).(api.QuerySetter)
		if !ok {
			return req, api.Errorf(api.KindInternal, "%s: request %T has no query form", info.Path, req)
		}
		return req, qs.SetQuery(r.URL.Query())
	}
	d := json.NewDecoder(r.Body)
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		return req, api.Errorf(api.KindInvalid, "request body: %v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return req, api.Errorf(api.KindInvalid, "request body: trailing data")
	}
	return req, nil
}

// Fail answers a request with err as the API error it is.
func (m *Mux) Fail(w http.ResponseWriter, r *http.Request, err error) {
	ae := m.errorOf(err)
	m.log.Debug("request failed", "method", r.Method, "path", r.URL.Path, "kind", ae.Kind, "err", ae.Message)
	WriteError(w, ae)
}

// WriteError answers with e: its kind's status and {"error": e}.
func WriteError(w http.ResponseWriter, e *api.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Kind.Status())
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: e})
}
