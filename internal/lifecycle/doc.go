// Package lifecycle is the shutdown of a stream server: operations enter
// and leave, and Close refuses new ones, tells the running ones to stop
// and waits for them, once.
//
// # Model
//
// A [Group] counts operations in flight: a stream handler, a request, a
// goroutine the server started. Each begins with Enter, which reports
// false once the group is closing (the operation must then not run), and
// ends with Leave. Close marks the group closing, runs the server's stop
// function (remove the stream handler, cancel the server's context, …)
// and waits until every operation that entered has left.
//
// The zero Group is ready to use. A server keeps one as a field:
//
//	func (s *Server) handle(st network.Stream) {
//		if !s.life.Enter() {
//			st.Reset()
//			return
//		}
//		defer s.life.Leave()
//		…
//	}
//
//	func (s *Server) Close() error {
//		s.life.Close(func() {
//			s.host.RemoveStreamHandler(Protocol)
//			s.cancel()
//		})
//		return nil
//	}
//
// # Concurrency
//
// Every method is safe for concurrent use. Close is idempotent: the first
// call does the work, and every call, concurrent or later, returns only
// once it is done. Enter never blocks for long; an operation must not
// call Close of its own group (it would wait for itself).
package lifecycle
