//go:build race

package hub

// raceEnabled: the race detector's instrumentation makes stack frames
// larger, so stack sizes are not checked under it.
const raceEnabled = true
