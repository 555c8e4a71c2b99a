// Package layers holds no code, only a test: the one written-down order of
// Blocktree's package layers (layers_test.go), checked against the import
// graph that `go list -deps -json` reports for every package of the module.
//
// The rules, from DESIGN's "Layers" section:
//
//   - A package imports only packages of its own layer or of a lower one;
//     tests may use anything at or below their package's layer as well.
//   - The bottom layer (paths and the internal helpers) imports nothing from
//     Blocktree outside its tests.
//   - A contract package does not import its own implementations: no
//     package imports a package below its own directory (blocks does not
//     import blocks/leveldb, tpm does not import tpm/softkey). Tests may.
//
// A package that is in no layer fails the test: add it to the table in
// layers_test.go where it belongs.
package layers
