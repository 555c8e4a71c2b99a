package canon

import (
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

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
