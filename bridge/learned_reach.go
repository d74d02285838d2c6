package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// notLearned reports a command for a device the rules hold no address
// for and that never spoke to the bridge: an unknown device.
func notLearned(name string) error {
	return fmt.Errorf("device %q has no url and has not spoken to the bridge (%w)", name, rules.ErrUnknownDevice)
}

// doTarget sends req to a command's target: a device at its url as
// doFor does, or a learned device where it last spoke from.
func (d *deviceClients) doTarget(ctx context.Context, t rules.Target, req *coapside.Request) (*coapside.Response, error) {
	c, err := d.prepareTarget(ctx, t, req)
	if err != nil {
		return nil, err
	}
	return c.Do(ctx, req)
}

// prepareTarget readies req for a command's or proxy's target and
// returns the client to send it with (see prepare and learnedClient).
func (d *deviceClients) prepareTarget(ctx context.Context, t rules.Target, req *coapside.Request) (*coapside.Client, error) {
	if !t.Learned {
		return d.prepare(ctx, t.Device, t.Secure, req)
	}
	c, addr, err := d.learnedClient(t.Name, viaFor(t.Secure))
	if err != nil {
		return nil, err
	}
	req.Peer = addr
	return c, nil
}

// learnedClient returns a client that sends from the bridge's own socket
// the device named name last spoke to, and the address it spoke from:
// behind NAT, the one path its NAT lets in (a socket of the bridge's own
// would not be). secure is the scheme the rule asks for; the device must
// have been learned over it (want; 0 takes either: observe and poll
// rules name no scheme).
func (d *deviceClients) learnedClient(name string, want Via) (*coapside.Client, *net.UDPAddr, error) {
	if d.learned == nil {
		return nil, nil, notLearned(name)
	}
	ld, ok := d.learned.lookup(name)
	if !ok {
		return nil, nil, notLearned(name)
	}
	if want != 0 && ld.Via != want {
		return nil, nil, fmt.Errorf("device %q spoke over %s, the rule's url asks for %s", name, ld.Via, want)
	}
	ep := d.endpointFor(ld)
	if ep == nil {
		return nil, nil, fmt.Errorf("device %q: the bridge's CoAP socket is not open", name)
	}
	c, err := coapside.NewClient(coapside.ClientOptions{Endpoint: ep})
	if err != nil {
		return nil, nil, fmt.Errorf("device %q: %w", name, err)
	}
	return c, net.UDPAddrFromAddrPort(ld.Addr), nil
}

// viaFor is the transport a scheme needs.
func viaFor(secure bool) Via {
	if secure {
		return ViaDTLS
	}
	return ViaUDP
}

// pingDevice sends a CoAP ping to device name: at its url when the rules
// give one, else where it last spoke from. known is false for a device
// neither the rules nor the learned devices hold.
func (d *deviceClients) pingDevice(ctx context.Context, set *rules.Set, name string) (alive, known bool) {
	dev, inRules := set.Device(name)
	if inRules && dev.Host != "" {
		return d.Ping(ctx, dev.Secure, dev.Host), true
	}
	if d.learned == nil {
		return false, false
	}
	ld, ok := d.learned.lookup(name)
	if !ok {
		return false, inRules
	}
	ep := d.endpointFor(ld)
	if ep == nil {
		return false, true
	}
	_, err := ep.Send(ctx, net.UDPAddrFromAddrPort(ld.Addr), &message.Message{Type: message.Confirmable, Code: message.Empty})
	return err == nil || errors.Is(err, coapside.ErrReset), true
}

// endpointFor is the bridge socket a learned device is reached from: the
// one it spoke to, or for a device restored from the state file (which
// has not spoken since the restart) the bridge's UDP socket.
func (d *deviceClients) endpointFor(ld LearnedDevice) *coapside.Endpoint {
	if ld.Endpoint != nil || d.serverEndpoint == nil {
		return ld.Endpoint
	}
	return d.serverEndpoint()
}
