package bridge

import (
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

const resourceRules = `
[[resource]]
name  = "config"
path  = "/config/{device}"
topic = "config/{device}"
`

func TestResourceServesLatestMessage(t *testing.T) {
	tb := startBridge(t, resourceRules, nil)
	c := newCoAPClient(t)
	ctx := t.Context()

	resp, err := c.Get(ctx, tb.coapURL("/config/d1"))
	if err != nil || resp.Code != message.NotFound {
		t.Fatalf("before first message: %v %v", resp, err)
	}
	publish(t, tb.MQTTAddr(), "config/d1", 0, false, `{"interval":1}`)
	publish(t, tb.MQTTAddr(), "config/d2", 0, false, `other`)
	publish(t, tb.MQTTAddr(), "config/d1", 0, false, `{"interval":2}`)
	eventually(t, 5*time.Second, "latest value", func() bool {
		resp, err = c.Get(ctx, tb.coapURL("/config/d1"))
		return err == nil && resp.Code == message.Content && string(resp.Payload) == `{"interval":2}`
	})
	if resp.Options.MaxAge() != 60 {
		t.Errorf("Max-Age %d, want 60", resp.Options.MaxAge())
	}
	resp, err = c.Put(ctx, tb.coapURL("/config/d1"), message.TextPlain, []byte("x"))
	if err != nil || resp.Code != message.MethodNotAllowed {
		t.Fatalf("PUT on a resource: %v %v", resp, err)
	}
}
