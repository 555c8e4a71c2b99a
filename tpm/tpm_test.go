package tpm

import "testing"

func TestParseDevice(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Device
		ok   bool
	}{
		{"auto", Device{Auto: true}, true},
		{"", Device{Auto: true}, true},
		{"none", Device{None: true}, true},
		{"/dev/tpmrm0", Device{Path: "/dev/tpmrm0"}, true},
		{"tcp:127.0.0.1:2321", Device{Addr: "127.0.0.1:2321"}, true},
		{"tcp:[::1]:2321", Device{Addr: "[::1]:2321"}, true},
		{"tcp:127.0.0.1", Device{}, false},
		{"tcp::2321", Device{}, false},
		{"tcp:host:", Device{}, false},
		{"maybe", Device{}, false},
		{"dev/tpm0", Device{}, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDevice(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseDevice(%q) = %+v, %v", tc.in, got, err)
			}
			if tc.ok && tc.in != "" {
				if again, _ := ParseDevice(got.String()); again != got {
					t.Fatalf("String() %q does not parse back", got.String())
				}
			}
		})
	}
}
