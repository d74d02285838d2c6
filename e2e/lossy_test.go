package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// TestE2ECommandsAndPushesExactlyOnceUnderLoss: the built bridge, with
// RFC 7252's default timing, talks to mosquitto and to 50 devices, each
// behind a proxy losing 5 % and duplicating 5 % of the datagrams each way;
// the devices push through another such proxy. 200 QoS 1 commands each run
// once on their device with one result published, and 200 confirmable
// pushes are each published once; mosquitto_sub counts what is published.
// (The in-process bridge test runs 500 of each; here the bridge's own
// MAX_RETRANSMIT of 4 leaves a command about a 1 in 100,000 chance of
// losing all five transmissions, so the count is kept smaller.)
func TestE2ECommandsAndPushesExactlyOnceUnderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 25 s")
	}
	const devices, each = 50, 4 // 200 commands, 200 pushes
	imp := peer.Impairment{Drop: 0.05, Duplicate: 0.05, Reorder: 0.02, Jitter: 2 * time.Millisecond}
	// The bridge acknowledges a command once its exchange ended, so the
	// broker's in-flight window, not the devices, would pace the run.
	brokerPort := peer.StartMosquitto(t, 0, "allow_anonymous true\nmax_inflight_messages 0\n").Port

	handled := &testkit.Tally{}
	var rules strings.Builder
	var proxies []*peer.LossyProxy
	for d := range devices {
		name := fmt.Sprintf("dev%d", d)
		conn, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &coapside.Server{Handler: coapside.HandlerFunc(func(w coapside.ResponseWriter, r *coapside.Request) {
			handled.Add(name + r.Path() + "=" + string(r.Payload))
			w.SetCode(message.Changed)
		})}
		go srv.Serve(conn)
		t.Cleanup(func() { srv.Close() })
		p := peer.StartLossyProxy(t, peer.LossyConfig{
			Target: conn.LocalAddr().(*net.UDPAddr), Seed: uint64(d + 1), ToTarget: imp, FromTarget: imp,
		})
		proxies = append(proxies, p)
		fmt.Fprintf(&rules, "[[device]]\nname = %q\nurl  = \"coap://%s\"\n\n", name, p.Addr())
	}
	// The command timeout exceeds MAX_TRANSMIT_WAIT (93 s), so a command
	// ends by its answer, not by the rule's clock.
	rules.WriteString(`
[[command]]
name           = "numbered"
filter         = "cmd/{device}/{n}"
method         = "PUT"
url            = "coap://{device}/led/{n}"
response_topic = "replies/{device}/{n}"
qos            = 1
timeout        = "120s"

[[ingress]]
name    = "pushes"
path    = "/telemetry/{device}/{n}"
methods = ["POST"]
topic   = "sensors/{device}/{n}"
qos     = 1
`)
	b := startBridgeBin(t, bridgeSetup{rules: rules.String(), broker: fmt.Sprintf("tcp://127.0.0.1:%d", brokerPort)})
	toBridge := peer.StartLossyProxy(t, peer.LossyConfig{
		Target: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: b.coapPort}, Seed: 100, ToTarget: imp, FromTarget: imp,
	})
	proxies = append(proxies, toBridge)
	replies := startSub(t, brokerPort, "replies/#")
	sensors := startSub(t, brokerPort, "sensors/#")

	pub := paho.NewClient(paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", brokerPort)).
		SetClientID(fmt.Sprintf("e2e-lossy-%d", time.Now().UnixNano())))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { pub.Disconnect(100) })

	start := time.Now()
	errs := make(chan error, devices*each)
	var pushers sync.WaitGroup
	for d := range devices {
		// A device that retries a little longer than the default, so that
		// no push runs out of retransmissions (p ≈ 0.0975^7 each).
		c, err := coapside.NewClient(coapside.ClientOptions{LocalAddr: "127.0.0.1:0",
			EndpointOptions: coapside.EndpointOptions{MaxRetransmit: 6}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		pushers.Add(1)
		go func() {
			defer pushers.Done()
			for i := range each {
				ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
				url := fmt.Sprintf("coap://%s/telemetry/dev%d/%d", toBridge.Addr(), d, i)
				resp, err := c.Post(ctx, url, message.TextPlain, []byte(fmt.Sprint(i)))
				cancel()
				switch {
				case err != nil:
					errs <- fmt.Errorf("push dev%d/%d: %w", d, i, err)
				case resp.Code != message.Changed:
					errs <- fmt.Errorf("push dev%d/%d: answered %v", d, i, resp.Code)
				}
			}
		}()
	}
	var toks []paho.Token
	for i := range each {
		for d := range devices {
			toks = append(toks, pub.Publish(fmt.Sprintf("cmd/dev%d/%d", d, i), 1, false, fmt.Sprint(i)))
		}
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("command %d not accepted by mosquitto: %v", i, tok.Error())
		}
	}
	pushers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	testkit.Eventually(t, 3*time.Minute, "a result for every command", func() bool { return len(replies.lines("replies/")) >= devices*each })
	testkit.Eventually(t, 30*time.Second, "every push published", func() bool { return len(sensors.lines("sensors/")) >= devices*each })
	elapsed := time.Since(start)

	// Late duplicates still held by a proxy reach their peer; then one clean
	// command and push, past the proxies, come out behind anything the
	// bridge published before them.
	testkit.Eventually(t, 30*time.Second, "proxies drained", func() bool {
		for _, p := range proxies {
			to, from := p.Counts()
			if to.Sent != to.Received-to.Dropped+to.Duplicated || from.Sent != from.Received-from.Dropped+from.Duplicated {
				return false
			}
		}
		return true
	})
	clean, err := coapside.NewClient(coapside.ClientOptions{LocalAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer clean.Close()
	if resp, err := clean.Post(t.Context(), b.coapURL("/telemetry/dev0/last"), message.TextPlain, []byte("last")); err != nil || resp.Code != message.Changed {
		t.Fatalf("last push: %v %v", resp, err)
	}
	mqttPub(t, brokerPort, "cmd/dev0/last", "last", "-q", "1")
	replies.waitLine(t, 30*time.Second, "replies/dev0/last ")
	sensors.waitLine(t, 30*time.Second, "sensors/dev0/last last")

	results, published := &testkit.Tally{}, &testkit.Tally{}
	for _, l := range replies.lines("replies/") {
		topic, body, _ := strings.Cut(l, " ")
		var r struct{ Status string }
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			r.Status = err.Error()
		}
		results.Add(topic + " " + r.Status)
	}
	for _, l := range sensors.lines("sensors/") {
		published.Add(l)
	}
	var wantHandled, wantResults, wantPublished []string
	for d := range devices {
		for i := range each {
			wantHandled = append(wantHandled, fmt.Sprintf("dev%d/led/%d=%d", d, i, i))
			wantResults = append(wantResults, fmt.Sprintf("replies/dev%d/%d ok", d, i))
			wantPublished = append(wantPublished, fmt.Sprintf("sensors/dev%d/%d %d", d, i, i))
		}
	}
	handled.Check(t, "device handler runs", append(wantHandled, "dev0/led/last=last"))
	results.Check(t, "results published", append(wantResults, "replies/dev0/last ok"))
	published.Check(t, "pushes published", append(wantPublished, "sensors/dev0/last last"))

	var to, from peer.LossyCounts
	for _, p := range proxies {
		a, b := p.Counts()
		to, from = addCounts(to, a), addCounts(from, b)
	}
	if to.Dropped == 0 || to.Duplicated == 0 || from.Dropped == 0 || from.Duplicated == 0 {
		t.Errorf("the proxies did not both drop and duplicate each way: to targets %+v, back %+v", to, from)
	}
	t.Logf("%d commands and %d pushes in %v; proxies, to targets %+v, back %+v",
		devices*each, devices*each, elapsed.Round(time.Millisecond), to, from)
}

// lines returns the complete output lines that start with prefix.
func (s *mqttSub) lines(prefix string) []string {
	out := s.out.String()
	out = out[:strings.LastIndexByte(out, '\n')+1] // a line still being written waits
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			ls = append(ls, l)
		}
	}
	return ls
}

func addCounts(a, b peer.LossyCounts) peer.LossyCounts {
	return peer.LossyCounts{
		Received: a.Received + b.Received, Dropped: a.Dropped + b.Dropped, Duplicated: a.Duplicated + b.Duplicated,
		Reordered: a.Reordered + b.Reordered, Sent: a.Sent + b.Sent,
	}
}
