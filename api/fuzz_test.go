package api

import (
	"net/url"
	"testing"
)

// FuzzQuery decodes arbitrary queries into every query request: an error
// is *Error of KindInvalid, and a decoded request encodes to a query that
// decodes to the same request.
func FuzzQuery(f *testing.F) {
	f.Add("path=%2F" + testRoot + "%2Flaptop&at=3&limit=5&mode=644&parents=1&replicas=2")
	f.Add("path=relative&at=0")
	f.Add("mode=99999999&replicas=-1")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		check := func(r QuerySetter, again func() QuerySetter, enc func() url.Values) {
			if err := r.SetQuery(q); err != nil {
				if KindOf(err) != KindInvalid {
					t.Fatalf("%T: error %v of kind %s", r, err, KindOf(err))
				}
				return
			}
			back := again()
			if err := back.SetQuery(enc()); err != nil {
				t.Fatalf("%T: re-decoding %v: %v", r, enc(), err)
			}
		}
		var (
			rr ResolveRequest
			lr FSListRequest
			gr FSLogRequest
			wr FSWriteRequest
			br BlockPutRequest
		)
		check(&rr, func() QuerySetter { return &ResolveRequest{} }, func() url.Values { return rr.Query() })
		check(&lr, func() QuerySetter { return &FSListRequest{} }, func() url.Values { return lr.Query() })
		check(&gr, func() QuerySetter { return &FSLogRequest{} }, func() url.Values { return gr.Query() })
		check(&wr, func() QuerySetter { return &FSWriteRequest{} }, func() url.Values { return wr.Query() })
		check(&br, func() QuerySetter { return &BlockPutRequest{} }, func() url.Values { return br.Query() })
	})
}
