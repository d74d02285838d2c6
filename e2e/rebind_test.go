package e2e

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

// timedLine is a mosquitto_sub -F '%U %t %p' line.
type timedLine struct {
	at             time.Time
	topic, payload string
}

func (s *mqttSub) timedLines(t *testing.T) []timedLine {
	t.Helper()
	out := s.out.String()
	out = out[:strings.LastIndexByte(out, '\n')+1]
	var ls []timedLine
	for _, l := range strings.Split(out, "\n") {
		f := strings.SplitN(l, " ", 3)
		if len(f) < 3 {
			continue
		}
		sec, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		ls = append(ls, timedLine{at: time.Unix(0, int64(sec*1e9)), topic: f[1], payload: f[2]})
	}
	return ls
}

// TestE2ESimRebindMidObservation: a `bridge sim --push` device behind the
// test NAT is observed by an `[[observe]] devices = ["*"]` rule through its
// NAT binding. The NAT moves it to a new binding (Rebind) several times;
// after each, its next push moves it at the bridge, the observation is made
// again there, and a command reaches it there. The sim notifies and then
// pushes the same reading at each tick, so every push names a notification:
// each one the device sent after its first push at a new binding must be
// published. Rebinding recovery is the time from that push's message to the
// first notification published after it.
func TestE2ESimRebindMidObservation(t *testing.T) {
	const interval, rebinds = 400 * time.Millisecond, 5
	rules := natRules + `
[[observe]]
name    = "every-device"
devices = ["*"]
paths   = ["/sensors/temp"]
topic   = "obs/{device}/temp"
`
	b := startBridgeBin(t, bridgeSetup{rules: rules})
	sub := startSubFormat(t, b.mqttPort, "#", "-F", "%U %t %p")
	nat := peer.StartNAT(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: b.coapPort}, 0)
	port := freeUDPRange(t, 1)
	start(t, ".", nil, bridgeBin(t), "sim", "--devices", "1", "--name-prefix", "tracker-",
		"--base-port", strconv.Itoa(port), "--listen-host", "127.0.0.1", "--interval", interval.String(),
		"--push", "coap://"+nat.Addr().String()+"/up/{device}/{metric}")
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	count := func(topic string) int {
		n := 0
		for _, l := range sub.timedLines(t) {
			if l.topic == topic {
				n++
			}
		}
		return n
	}
	testkit.Eventually(t, 20*time.Second, "first notification", func() bool { return count("obs/tracker-0/temp") > 0 })

	// firstPush[i]: index among the pushes of the first one at binding i.
	var firstPush []int
	var cmdRTT []string
	for i := range rebinds {
		// Right after a tick's push (battery is its last reading), so the
		// next tick's datagrams are the first at the new binding.
		n := count("up/tracker-0/battery")
		testkit.Eventually(t, 10*interval, "a push", func() bool { return count("up/tracker-0/battery") > n })
		firstPush = append(firstPush, count("up/tracker-0/temp"))
		addr, err := nat.Rebind(local)
		if err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 10*time.Second, "bridge moves tracker-0 to "+addr.String(), func() bool {
			return strings.Contains(b.out.String(), `msg="device moved" device=tracker-0 from=`) &&
				strings.Contains(b.out.String(), "address="+addr.String())
		})
		// A command goes to the new binding.
		before := count("replies/tracker-0/actuators/led")
		mqttPub(t, b.mqttPort, "cmd/tracker-0/actuators/led", []string{"on", "off"}[i%2], "-q", "1")
		testkit.Eventually(t, 10*time.Second, "command result", func() bool { return count("replies/tracker-0/actuators/led") > before })
		res := ""
		for _, l := range sub.timedLines(t) {
			if l.topic == "replies/tracker-0/actuators/led" {
				res = l.payload
			}
		}
		if !strings.Contains(res, `"status":"ok"`) {
			t.Fatalf("command after rebind %d: %s", i+1, res)
		}
		_, rtt, _ := strings.Cut(res, `"rtt_ms":`)
		rtt, _, _ = strings.Cut(rtt, "}")
		cmdRTT = append(cmdRTT, rtt)
		// Two more ticks at this binding before the next rebind.
		n = count("up/tracker-0/temp")
		testkit.Eventually(t, 20*interval, "two more pushes", func() bool { return count("up/tracker-0/temp") >= n+2 })
	}

	// Pair pushes and notifications by reading: every push's reading from
	// the one after a binding's first push on must have been notified, in
	// order (the last push's notification may still be on its way).
	var pushes, notes []timedLine
	for _, l := range sub.timedLines(t) {
		switch l.topic {
		case "up/tracker-0/temp":
			pushes = append(pushes, l)
		case "obs/tracker-0/temp":
			notes = append(notes, l)
		}
	}
	var recovery []time.Duration
	for _, fp := range firstPush {
		at := pushes[fp].at
		for _, nl := range notes {
			if nl.at.After(at) {
				recovery = append(recovery, nl.at.Sub(at))
				break
			}
		}
	}
	// RFC 7641 §4.5.2: while a confirmable notification waits for its
	// ACK, newer values replace the one queued (latest value wins), so a
	// busy machine may skip a reading. What must not happen is a stream
	// that stops: after every push, a notification of that reading or of
	// a later one follows.
	next, superseded := 0, 0
	for j := firstPush[0] + 1; j < len(pushes)-1; j++ {
		if slices.Contains(firstPush, j) {
			continue // its notification went before its push, at a binding the bridge did not know yet
		}
		later := map[string]bool{}
		for _, p := range pushes[j:] {
			later[p.payload] = true
		}
		k := next
		for k < len(notes) && !(later[notes[k].payload] && notes[k].at.After(pushes[j-1].at)) {
			k++
		}
		if k == len(notes) {
			t.Errorf("push %d (%s at %s): no notification of it or of a later reading after it", j, pushes[j].payload, pushes[j].at.Format("15:04:05.000"))
			continue
		}
		if notes[k].payload != pushes[j].payload {
			superseded++ // replaced by a newer value, not lost: the stream went on
			continue
		}
		next = k + 1
	}
	slices.Sort(recovery)
	if len(recovery) != rebinds {
		t.Fatalf("recovery measured %d times, want %d", len(recovery), rebinds)
	}
	t.Logf("%d rebinds: recovery (push at the new binding to the next notification published) %v, median %v; command rtt_ms after each move %v; %d pushes, %d notifications, %d readings superseded by a newer one",
		rebinds, recovery, recovery[len(recovery)/2], cmdRTT, len(pushes), len(notes), superseded)
}
