// Package server is the daemon's side of package api's routes: one
// generic handler per api.Shape, so the body limit, the decoding of the
// request (JSON body, unknown fields and trailing data refused; the query
// for GET and uploads), the encoding of the answer and the writing of
// errors are written once.
//
//	mux := serve.New(log, errorOf)
//	serve.Unary(mux, api.RouteStatus, serve.MaxBody, status)
//	serve.Stream(mux, api.RouteListen, listen, nil)
//
// A handler returns an error; the Mux's errorOf turns it into the
// *api.Error the client sees, answered with its kind's HTTP status. A
// Stream handler's error before its first line is answered so too; after
// it, it goes in the stream as the line failed makes of it, or ends the
// stream. A Download handler's error after the first byte goes in the
// api.TrailerError trailer.
//
// The package imports only the standard library and api.
package serve
