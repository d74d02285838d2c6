package peer

import (
	"fmt"
	"testing"
)

// recorder stands in for a test, recording how it was ended.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recorder) Skip(a ...any)                  { r.skip = fmt.Sprint(a...) }

// TestUnavailable: a test that cannot run is skipped locally and fails
// under BRIDGE_E2E_STRICT=1.
func TestUnavailable(t *testing.T) {
	t.Setenv(StrictEnv, "")
	r := &recorder{TB: t}
	Unavailable(r, "no IPv6 loopback: %v", "refused")
	if r.skip != "no IPv6 loopback: refused" || r.fatal != "" {
		t.Errorf("without %s: skip %q, fatal %q; want a skip", StrictEnv, r.skip, r.fatal)
	}
	t.Setenv(StrictEnv, "1")
	r = &recorder{TB: t}
	Unavailable(r, "no IPv6 loopback: %v", "refused")
	if r.fatal == "" || r.skip != "" {
		t.Errorf("with %s=1: skip %q, fatal %q; want a failure", StrictEnv, r.skip, r.fatal)
	}
}
