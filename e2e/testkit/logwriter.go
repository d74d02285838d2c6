package testkit

import (
	"strings"
	"testing"
)

// LogWriter is an io.Writer that sends each write, a log line, to tb.Log,
// so a component's logs show only for a failing test (or with -v).
type LogWriter struct{ TB testing.TB }

// Write logs p without its trailing newline.
func (w LogWriter) Write(p []byte) (int, error) {
	w.TB.Helper()
	w.TB.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
