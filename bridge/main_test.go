package bridge

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every
// goroutine the bridge starts must end when Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
