package canon

import (
	"bytes"
	"errors"
	"testing"
)

type sample struct {
	V    uint   `cbor:"v"`
	Name string `cbor:"name"`
	Data []byte `cbor:"data,omitempty"`
}

func TestRoundTrip(t *testing.T) {
	in := sample{V: 1, Name: "x", Data: []byte{1, 2}}
	b, err := Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	var out sample
	if err := Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Name != in.Name || string(out.Data) != string(in.Data) {
		t.Fatalf("round trip: %+v", out)
	}
	if v, err := Version(b); err != nil || v != 1 {
		t.Fatalf("Version = %d, %v", v, err)
	}
}

func TestRefusals(t *testing.T) {
	good, _ := Marshal(&sample{V: 1, Name: "x"})
	for _, tc := range []struct {
		name string
		data []byte
		want error // nil: any error
	}{
		// {"v":1,"name":"x"} with a non-minimal integer (0x18 0x01 for 1).
		{"non-minimal integer", []byte{0xa2, 0x61, 'v', 0x18, 0x01, 0x64, 'n', 'a', 'm', 'e', 0x61, 'x'}, ErrNotCanonical},
		// Keys out of canonical order: "name" before "v".
		{"unsorted keys", []byte{0xa2, 0x64, 'n', 'a', 'm', 'e', 0x61, 'x', 0x61, 'v', 0x01}, ErrNotCanonical},
		{"trailing byte", append(append([]byte(nil), good...), 0), nil},
		{"unknown field", mustMarshal(t, map[string]any{"v": 1, "name": "x", "extra": 1}), nil},
		{"duplicate key", []byte{0xa2, 0x61, 'v', 0x01, 0x61, 'v', 0x01}, nil},
		{"indefinite length", []byte{0xbf, 0x61, 'v', 0x01, 0xff}, nil},
		{"empty", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sample
			err := Unmarshal(tc.data, &s)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Unmarshal: %v, want %v", err, tc.want)
			}
		})
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type list struct {
	V     uint   `cbor:"v"`
	Items []uint `cbor:"items"`
}

// TestDecoderLimits: each limit refuses past its value and a Decoder with
// a larger one accepts, as strictly as the default.
func TestDecoderLimits(t *testing.T) {
	long := mustMarshal(t, &list{V: 1, Items: make([]uint, 5000)})
	big := mustMarshal(t, &sample{V: 1, Name: "x", Data: make([]byte, MaxSize)})
	pairs := map[string]uint{}
	for i := range 300 {
		pairs[string(rune('a'+i%26))+string(rune('a'+i/26))] = 1
	}
	wide := mustMarshal(t, pairs)
	deep := []byte{0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x00} // [[[[[[[[0]]]]]]]]
	tests := []struct {
		name string
		opts []Option
		data []byte
		v    func() any
		ok   bool
	}{
		{"array default", nil, long, func() any { return new(list) }, false},
		{"array raised", []Option{WithMaxArrayElements(1 << 16)}, long, func() any { return new(list) }, true},
		{"size default", nil, big, func() any { return new(sample) }, false},
		{"size raised", []Option{WithMaxSize(2 * MaxSize)}, big, func() any { return new(sample) }, true},
		{"size lowered", []Option{WithMaxSize(4)}, mustMarshal(t, &sample{V: 1}), func() any { return new(sample) }, false},
		{"pairs default", nil, wide, func() any { return new(map[string]uint) }, false},
		{"pairs raised", []Option{WithMaxMapPairs(512)}, wide, func() any { return new(map[string]uint) }, true},
		{"nesting default", nil, deep, func() any { return new(any) }, true},
		{"nesting lowered", []Option{WithMaxNested(4)}, deep, func() any { return new(any) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewDecoder(tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			err = d.Unmarshal(tt.data, tt.v())
			if (err == nil) != tt.ok {
				t.Fatalf("Unmarshal: %v, want ok=%v", err, tt.ok)
			}
			if tt.opts == nil {
				if err2 := Unmarshal(tt.data, tt.v()); (err2 == nil) != (err == nil) {
					t.Fatalf("the default Decoder says %v, Unmarshal %v", err, err2)
				}
			}
		})
	}
	// A raised limit is no less strict.
	d, _ := NewDecoder(WithMaxArrayElements(1 << 16))
	var s sample
	if err := d.Unmarshal([]byte{0xa2, 0x64, 'n', 'a', 'm', 'e', 0x61, 'x', 0x61, 'v', 0x01}, &s); !errors.Is(err, ErrNotCanonical) {
		t.Fatalf("unsorted keys: %v", err)
	}
}

func TestNewDecoderRefuses(t *testing.T) {
	for _, o := range []Option{WithMaxSize(0), WithMaxNested(1), WithMaxArrayElements(1), WithMaxMapPairs(1)} {
		if _, err := NewDecoder(o); err == nil {
			t.Fatal("NewDecoder accepted a limit out of range")
		}
	}
}

// FuzzUnmarshal: whatever Unmarshal accepts re-encodes to the same bytes,
// and a Decoder with raised limits agrees with it on what the default
// limits admit.
func FuzzUnmarshal(f *testing.F) {
	f.Add(mustMarshal(f, &sample{V: 1, Name: "x", Data: []byte{1, 2}}))
	f.Add([]byte{0xa2, 0x61, 'v', 0x18, 0x01, 0x64, 'n', 'a', 'm', 'e', 0x61, 'x'})
	raised, err := NewDecoder(WithMaxArrayElements(1<<16), WithMaxMapPairs(1024), WithMaxSize(2*MaxSize))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s sample
		if err := Unmarshal(data, &s); err != nil {
			return
		}
		again, err := Marshal(&s)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted %x re-encodes to %x (%v)", data, again, err)
		}
		var s2 sample
		if err := raised.Unmarshal(data, &s2); err != nil {
			t.Fatalf("raised limits refuse what the default accepts: %v", err)
		}
	})
}
