package bridge

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// BenchmarkStateWrite is the cost of one save of the state file (write,
// fsync, rename, directory fsync) holding n queued commands.
func BenchmarkStateWrite(b *testing.B) {
	for _, n := range []int{0, 100, 1000} {
		b.Run(fmt.Sprint("commands=", n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), stateFileName)
			now := time.Now()
			st := savedState{Devices: []savedDevice{{Name: "d", Addr: "127.0.0.1:5683", LastSeen: now}}}
			for i := range n {
				st.Commands = append(st.Commands, savedCommand{Topic: fmt.Sprint("cmd/d/n/", i), Payload: []byte("on"), QoS: 1,
					ResponseTopic: "replies/d", Received: now, Expires: now.Add(time.Minute)})
			}
			for b.Loop() {
				if err := writeState(path, st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMeasureQueueing measures, through mosquitto, what queueing a
// command for a sleeping device costs with and without state.dir: the
// time from a publish to its queued result, one command at a time and
// for a burst of 1,000 commands to 10 devices (and the burst's
// throughput). It runs with BRIDGE_MEASURE=1 and only logs its figures.
func TestMeasureQueueing(t *testing.T) {
	if os.Getenv("BRIDGE_MEASURE") == "" {
		t.Skip("set BRIDGE_MEASURE=1 to measure")
	}
	for _, durable := range []bool{false, true} {
		name := "memory"
		if durable {
			name = "state.dir"
		}
		t.Run(name, func(t *testing.T) {
			const devices, burst, single = 10, 1000, 50
			broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
			tb := startBridge(t, sleepyRules(""), func(c *Config, o *Options) {
				useRemoteBroker(c, broker.Addr(), "measure")
				if durable {
					c.State.Dir = t.TempDir()
				}
				c.Devices.Awake = 100 * time.Millisecond
				c.Devices.QueueSize = 2 * burst / devices
			})
			var saves atomic.Int64
			tb.keeper.saveMu.Lock() // save reads snap under it
			snap := tb.keeper.snap
			tb.keeper.snap = func() savedState { saves.Add(1); return snap() }
			tb.keeper.saveMu.Unlock()
			for i := range devices {
				dev := startSleepyDevice(t, tb.CoAPAddr(), fmt.Sprint("dev", i), 50*time.Millisecond, time.Hour, 0)
				dev.waitAsleep(t)
			}
			testkit.Eventually(t, 5*time.Second, "every device asleep", func() bool {
				for i := range devices {
					if tb.commands.awake(fmt.Sprint("dev", i), time.Now()) {
						return false
					}
				}
				return true
			})

			var mu sync.Mutex
			arrived := map[string]time.Time{} // reply topic -> when its queued result came
			got := make(chan struct{}, 2*burst)
			sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + broker.Addr()).SetClientID(fmt.Sprint("measure-sub-", time.Now().UnixNano())))
			if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			defer sub.Disconnect(100)
			if tok := sub.Subscribe("replies/#", 1, func(_ paho.Client, m paho.Message) {
				mu.Lock()
				arrived[m.Topic()] = time.Now()
				mu.Unlock()
				got <- struct{}{}
			}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + broker.Addr()).SetClientID(fmt.Sprint("measure-pub-", time.Now().UnixNano())))
			if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			defer pub.Disconnect(100)
			wait := func(n int) {
				for range n {
					select {
					case <-got:
					case <-time.After(30 * time.Second):
						t.Fatal("a queued result did not come")
					}
				}
			}
			latencies := func(sent map[string]time.Time) []time.Duration {
				mu.Lock()
				defer mu.Unlock()
				var out []time.Duration
				for topic, at := range sent {
					out = append(out, arrived["replies/"+topic[len("cmd/"):]].Sub(at))
				}
				slices.Sort(out)
				return out
			}

			// One at a time.
			sent := map[string]time.Time{}
			for i := range single {
				topic := fmt.Sprintf("cmd/dev%d/one/%d", i%devices, i)
				sent[topic] = time.Now()
				if tok := pub.Publish(topic, 1, false, "on"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Fatal(tok.Error())
				}
				wait(1)
			}
			one := latencies(sent)

			// A burst.
			saved := saves.Load()
			sent = map[string]time.Time{}
			var toks []paho.Token
			start := time.Now()
			for i := range burst {
				topic := fmt.Sprintf("cmd/dev%d/burst/%d", i%devices, i)
				sent[topic] = time.Now()
				toks = append(toks, pub.Publish(topic, 1, false, "on"))
			}
			wait(burst)
			total := time.Since(start)
			for _, tok := range toks {
				if tok.Wait(); tok.Error() != nil {
					t.Fatal(tok.Error())
				}
			}
			all := latencies(sent)
			saved = saves.Load() - saved
			pct := func(d []time.Duration, p float64) time.Duration {
				return d[int(float64(len(d)-1)*p)].Round(10 * time.Microsecond)
			}
			t.Logf("%s: one at a time (%d): publish to queued median %v, p90 %v, max %v", name, single, pct(one, 0.5), pct(one, 0.9), pct(one, 1))
			t.Logf("%s: burst of %d to %d devices: %v, %.0f commands/s, %d saves; publish to queued median %v, p90 %v, p99 %v, max %v",
				name, burst, devices, total.Round(time.Millisecond), float64(burst)/total.Seconds(), saved, pct(all, 0.5), pct(all, 0.9), pct(all, 0.99), pct(all, 1))
			if durable {
				st, err := readState(tb.keeper.path)
				if err != nil || len(st.Commands) != single+burst {
					t.Errorf("state file holds %d commands (%v), want %d", len(st.Commands), err, single+burst)
				}
			}
		})
	}
}
