//go:build !bt_liar

package exchange

// liarFromEnv: this build never lies (build with -tags bt_liar and set
// BT_LIE for a lying server).
func liarFromEnv() liar { return nil }
