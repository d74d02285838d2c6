package mqttside

import (
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// TestRemoteReconnectsToFlappingBroker stops and restarts the broker
// several times in a short series on the same port, alternating SIGKILL
// and SIGTERM, and checks with the default backoff that the client is
// connected again within a bound after each restart: the retry delay
// stays capped by MaxBackoff however often the connection drops.
func TestRemoteReconnectsToFlappingBroker(t *testing.T) {
	checkLeaks(t)
	m := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
	var logs testkit.SyncBuffer
	connected := make(chan time.Time, 16)
	r := newTestRemote(t, RemoteOptions{
		Broker:     m.URL(),
		MinBackoff: DefaultMinBackoff,
		MaxBackoff: DefaultMaxBackoff,
		// The product's timeouts: the retry schedule depends on them.
		ConnectTimeout: DefaultConnectTimeout,
		KeepAlive:      DefaultKeepAlive,
		Logger:         testLogger(&logs),
		OnEvent: func(e Event) {
			if e.State == StateConnected {
				connected <- e.Time
			}
		},
	})
	if err := r.Start(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	<-connected

	// Correctness bound, generous for a loaded machine: the default cap
	// on the retry delay, plus time for the connection itself.
	const bound = 10 * time.Second
	// A longer outage that lets the backoff grow, then short ones in quick
	// succession, as from a broker that crashes again right after coming
	// back.
	downs := []time.Duration{3500 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}
	var delays []time.Duration
	for i, down := range downs {
		how := "SIGKILL"
		if i%2 == 0 {
			m.Kill()
		} else {
			how = "SIGTERM"
			m.Stop()
		}
		testkit.Eventually(t, 5*time.Second, "client notices the outage", func() bool { return r.State() != StateConnected })
		time.Sleep(down) // the outage itself, not a synchronisation
		m.Restart()
		back := time.Now()
		select {
		case at := <-connected:
			delays = append(delays, max(at.Sub(back), 0))
		case <-time.After(bound):
			t.Fatalf("outage %d (%s, %v down): not reconnected within %v after the broker was back (delays before: %v)",
				i+1, how, down, bound, delays)
		}
	}
	t.Logf("reconnect delays after the broker was back: %v", delays)
	if st := r.Stats(); st.Reconnects != uint64(len(downs)) || st.ConnectAttempts <= st.Reconnects+1 {
		t.Errorf("stats %+v: want %d reconnects and the failed attempts counted", st, len(downs))
	}
	testkit.Eventually(t, 5*time.Second, "one info line per connection", func() bool {
		return strings.Count(logs.String(), "level=INFO msg=\"mqtt connected\"") == len(downs)+1
	})
}
