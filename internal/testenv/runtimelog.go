package testenv

import (
	"sync/atomic"

	"github.com/go-logr/logr"
)

// runtimeLogCalls counts the calls that reached controller-runtime's
// global logger since Main set it.
var runtimeLogCalls atomic.Int64

// RuntimeLogCalls returns how many calls reached controller-runtime's
// global logger (log.Log, and every logger made from it, such as
// log.FromContext's for a ctx without a logger) since the package's tests
// began: a line, a check of its level, or a logger made from it. In a
// program that never calls log.SetLogger, the first such call 30s or more
// into its life prints a warning that it never did; a library that leaves
// the choice of logger to such a program must make none. Main sets the
// logger, which discards every line.
func RuntimeLogCalls() int64 { return runtimeLogCalls.Load() }

// runtimeLog is a log sink that discards every line and counts every call.
type runtimeLog struct{}

func (runtimeLog) Init(logr.RuntimeInfo) {}

func (runtimeLog) Enabled(int) bool {
	runtimeLogCalls.Add(1)
	return false
}

func (runtimeLog) Info(int, string, ...any) { runtimeLogCalls.Add(1) }

func (runtimeLog) Error(error, string, ...any) { runtimeLogCalls.Add(1) }

func (l runtimeLog) WithValues(...any) logr.LogSink {
	runtimeLogCalls.Add(1)
	return l
}

func (l runtimeLog) WithName(string) logr.LogSink {
	runtimeLogCalls.Add(1)
	return l
}
