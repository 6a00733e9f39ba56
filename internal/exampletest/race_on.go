//go:build race

package exampletest

// raceEnabled is set when the tests run with the race detector: the example
// programs are built with it too.
const raceEnabled = true
