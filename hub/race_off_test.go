//go:build !race

package hub

// raceEnabled: see race_on_test.go.
const raceEnabled = false
