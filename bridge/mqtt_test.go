package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/mqttside"
)

// TestPublishContextOnlyBoundsWaitingPublishers: a publish through the
// embedded broker, which never waits, gets its caller's context as it is;
// any other publisher, and the link before Run attached its client, get
// the deadline.
func TestPublishContextOnlyBoundsWaitingPublishers(t *testing.T) {
	embedded := &mqttLink{}
	embedded.attach(&mqttside.Embedded{})
	for _, tc := range []struct {
		name     string
		pub      publisher
		deadline bool
	}{
		{"embedded", embedded, false},
		{"not attached", &mqttLink{}, true},
		{"other", nopPublisher{}, true},
	} {
		ctx, cancel := publishContext(context.Background(), tc.pub, time.Minute)
		_, has := ctx.Deadline()
		cancel()
		if has != tc.deadline {
			t.Errorf("%s: deadline %v, want %v", tc.name, has, tc.deadline)
		}
	}
}
