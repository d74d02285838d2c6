package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/e2e/peer"
)

// TestE2ESIGTERMWithDeadDevicesAndBroker kills (SIGKILL) the observed
// devices and the remote broker, leaves devices' QoS 1 pushes waiting for
// the dead broker, then sends SIGTERM: the bridge exits 0 within 5 s, every
// time, with RFC 7252 default timing toward the devices.
func TestE2ESIGTERMWithDeadDevicesAndBroker(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	for round := range 3 {
		broker := peer.StartMosquitto(t, 0, "allow_anonymous true\n")
		devs := []*peer.CoapServer{peer.StartCoapServerProcess(t), peer.StartCoapServerProcess(t)}
		rules := ingressRule
		for i, d := range devs {
			rules += fmt.Sprintf(`
[[device]]
name = "dev%d"
url  = "coap://%s"
`, i, d.Addr)
		}
		rules += `
[[observe]]
name    = "time"
devices = ["dev0", "dev1"]
paths   = ["/time"]
topic   = "time/{device}"
`
		b := startBridgeBin(t, bridgeSetup{rules: rules, broker: broker.URL()})
		sub := startSub(t, broker.Port, "time/#")
		sub.waitLine(t, 15*time.Second, "time/dev0")
		sub.waitLine(t, 15*time.Second, "time/dev1")

		for _, d := range devs {
			d.Kill()
		}
		broker.Kill()
		// Devices push while the broker is dead: their QoS 1 messages wait.
		for i := range 3 {
			start(t, ".", nil, client, "-m", "post", "-e", "x", b.coapURL(fmt.Sprintf("/telemetry/p%d/temp", i)))
		}
		// A raw NON flood keeps the server busy up to the signal.
		f := peer.Flood{Type: message.NonConfirmable, Path: []string{"telemetry", "f", "t"}, Paced: true, Length: 300 * time.Millisecond}
		f.Run(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: b.coapPort})

		began := time.Now()
		code := b.proc.stop(t, 10*time.Second)
		took := time.Since(began)
		t.Logf("round %d: exit %d %v after SIGTERM", round, code, took.Round(time.Millisecond))
		if code != 0 {
			t.Fatalf("round %d: exit code %d\n%s", round, code, b.proc.out.String())
		}
		if took >= 5*time.Second {
			t.Fatalf("round %d: exited %v after SIGTERM, beyond the 5 s bound\n%s", round, took, b.proc.out.String())
		}
	}
}
