//go:build race

package coapside

// raceEnabled: the race detector instruments the code and allocates on its
// own, so allocation counts are checked only without it.
const raceEnabled = true
