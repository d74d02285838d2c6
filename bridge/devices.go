package bridge

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
	"github.com/coap-mqtt/bridge/rules"
)

// deviceClients holds the CoAP clients the bridge uses to reach devices: one
// plain UDP client for coap:// and one DTLS client for coaps://, whose
// sessions are reused across requests and whose credentials are looked up
// per device address in the running rule set.
type deviceClients struct {
	opts coapside.EndpointOptions
	log  *slog.Logger
	set  *atomic.Pointer[rules.Set]

	mu         sync.Mutex
	plain      *coapside.Client
	secure     *coapside.Client
	secureConn *dtls.ClientConn
	securePC   net.PacketConn // the UDP socket under secureConn
	closed     bool
	// peers maps a resolved coaps address to the name of the device last
	// sent to there, so the handshake finds the device's credentials
	// without resolving every device's host again.
	peers map[string]string

	// learned holds the devices reached where they last spoke from
	// (doTarget); nil: none.
	learned *learnedDevices
	// serverEndpoint is the bridge's UDP CoAP socket, for learned devices
	// restored from the state file; nil: none.
	serverEndpoint func() *coapside.Endpoint

	// lookup resolves a host name to its addresses, best first: every
	// address the bridge sends to a device is resolved by it (resolve).
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

func newDeviceClients(set *atomic.Pointer[rules.Set], opts coapside.EndpointOptions, log *slog.Logger) *deviceClients {
	return &deviceClients{opts: opts, log: log, set: set, peers: map[string]string{}, lookup: lookupHost}
}

// lookupHost resolves a host name with the system's resolver.
func lookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// resolve turns a device's "host:port" into the one address a request,
// its DTLS handshake and a ping all go to: an IP literal as it is, a host
// name as its first address (the resolver orders them, RFC 6724), so for
// a name with IPv4 and IPv6 addresses one family is chosen once.
func (d *deviceClients) resolve(ctx context.Context, hostport string) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w", hostport, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: port: %w", hostport, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		addrs, lerr := d.lookup(ctx, host)
		if lerr == nil && len(addrs) == 0 {
			lerr = errors.New("no address")
		}
		if lerr != nil {
			return nil, fmt.Errorf("resolve %q: %w", host, lerr)
		}
		ip = addrs[0]
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(p))), nil
}

// client returns the client for a scheme, creating it on first use.
func (d *deviceClients) client(secure bool) (*coapside.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, coapside.ErrClosed
	}
	if !secure {
		if d.plain == nil {
			conn, err := listenUDP(":0")
			if err != nil {
				return nil, fmt.Errorf("coap client: %w", err)
			}
			c, err := coapside.NewClient(coapside.ClientOptions{EndpointOptions: d.opts, Conn: conn})
			if err != nil {
				return nil, fmt.Errorf("coap client: %w", err)
			}
			d.plain = c
		}
		return d.plain, nil
	}
	if d.secure == nil {
		// The large receive buffer too: notifications of many coaps
		// devices arrive on this one socket.
		pc, err := listenUDP(":0")
		if err != nil {
			return nil, fmt.Errorf("coaps client: %w", err)
		}
		conn, err := dtls.NewClientConnOn(pc, dtls.ClientConfig{
			CredentialsFor: d.credentialsFor,
			Limits:         dtls.Limits{Logger: d.log},
		})
		if err != nil {
			_ = pc.Close()
			return nil, fmt.Errorf("coaps client: %w", err)
		}
		c, err := coapside.NewClient(coapside.ClientOptions{EndpointOptions: d.opts, Conn: conn})
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("coaps client: %w", err)
		}
		d.secure, d.secureConn, d.securePC = c, conn, pc
	}
	return d.secure, nil
}

// bind records that dev is the device at the resolved address addr.
func (d *deviceClients) bind(addr net.Addr, dev *rules.Device) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.peers) >= maxPeers {
		clear(d.peers) // devices that moved address; the live ones bind again
	}
	d.peers[addr.String()] = dev.Name
}

// maxPeers bounds the address-to-device table.
const maxPeers = 1 << 16

// credentialsFor finds the coaps device at addr in the running rule set:
// the device a request to addr was addressed to, or else (a literal coaps
// host in a command url) the device whose host resolves to addr.
func (d *deviceClients) credentialsFor(addr net.Addr) (dtls.Credentials, error) {
	set := d.set.Load()
	if set == nil {
		return dtls.Credentials{}, errNoCredentials
	}
	d.mu.Lock()
	name, bound := d.peers[addr.String()]
	d.mu.Unlock()
	if dev, ok := set.Device(name); bound && ok && dev.Secure {
		return deviceCredentials(dev)
	}
	for _, dev := range set.Devices {
		if !dev.Secure {
			continue
		}
		ua, err := d.resolve(context.Background(), dev.Host)
		if err != nil || ua.String() != addr.String() {
			continue
		}
		return deviceCredentials(dev)
	}
	return dtls.Credentials{}, fmt.Errorf("%w: no coaps device at %s", errNoCredentials, addr)
}

// deviceCredentials builds a device's DTLS credentials from its entry
// (PSK, or certificate with CA file and/or pins) with the one builder the
// CLI uses too. Loading the rules builds them once to report mistakes
// (checkRules); a handshake builds them again, reading the files then.
func deviceCredentials(dev *rules.Device) (dtls.Credentials, error) {
	c, err := dtls.LoadCredentials(deviceFiles(dev))
	if err != nil {
		return dtls.Credentials{}, fmt.Errorf("device %s: %w", dev.Name, err)
	}
	c.Name = credentialsKey(dev)
	return c, nil
}

// deviceFiles are the DTLS settings of a device entry.
func deviceFiles(dev *rules.Device) dtls.DeviceFiles {
	return dtls.DeviceFiles{
		PSKIdentity: dev.PSKIdentity,
		PSK:         dev.PSK,
		CertFile:    dev.CertFile,
		KeyFile:     dev.KeyFile,
		CAFile:      dev.CAFile,
		Pins:        dev.Pins,
	}
}

// doFor sends req to dev (nil for a literal host); see prepare.
func (d *deviceClients) doFor(ctx context.Context, dev *rules.Device, secure bool, req *coapside.Request) (*coapside.Response, error) {
	c, err := d.prepare(ctx, dev, secure, req)
	if err != nil {
		return nil, err
	}
	return c.Do(ctx, req)
}

// prepare readies req for dev (nil for a literal host) and returns the
// client to send it with. The address is resolved once (resolve) and kept
// in req.Peer, so everything sent for the request goes to that one
// address; for coaps the DTLS session with it is made first, with dev's
// credentials, so a refused handshake is reported as such rather than as
// a request timeout.
func (d *deviceClients) prepare(ctx context.Context, dev *rules.Device, secure bool, req *coapside.Request) (*coapside.Client, error) {
	if dev != nil && dev.Host == "" {
		// A device without url: where it last spoke from, over either
		// transport (observe and poll rules name no scheme).
		c, addr, err := d.learnedClient(dev.Name, 0)
		if err != nil {
			return nil, err
		}
		req.Peer = addr
		return c, nil
	}
	c, err := d.client(secure)
	if err != nil {
		return nil, err
	}
	if req.Peer == nil {
		if req.URL == nil {
			return nil, fmt.Errorf("%w: request has neither Peer nor URL", coapside.ErrInvalidURL)
		}
		if req.Peer, err = d.resolve(ctx, uri.Addr(req.URL)); err != nil {
			return nil, err
		}
	}
	if secure {
		if dev != nil {
			// Bound once its own session stands: a failing entry does not
			// lend its credentials to the handshakes writes make for the
			// entry whose session it ended.
			if err = d.handshakeAs(ctx, req.Peer, dev); err == nil {
				d.bind(req.Peer, dev)
			}
		} else {
			err = d.handshake(ctx, req.Peer)
		}
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

// handshakeAs makes sure the DTLS session with addr is one made with dev's
// credentials as the rules give them now: a session made with others (the
// entry's key, certificate, CA or pins changed by a reload, or another
// device at that address) is ended and made again.
func (d *deviceClients) handshakeAs(ctx context.Context, addr net.Addr, dev *rules.Device) error {
	d.mu.Lock()
	conn := d.secureConn
	d.mu.Unlock()
	if conn == nil {
		return nil
	}
	err := conn.HandshakeWith(ctx, addr, credentialsKey(dev), func() (dtls.Credentials, error) { return deviceCredentials(dev) })
	if err != nil {
		return fmt.Errorf("coaps %s: %w", addr, err)
	}
	return nil
}

// credentialsKey names a device entry's DTLS settings without holding its
// key: a digest of the PSK identity and key, the certificate, key and CA
// files (their names, sizes and modification times: a file replaced in
// place is other credentials) and the pins.
func credentialsKey(dev *rules.Device) string {
	h := sha256.New()
	for _, f := range []string{dev.PSKIdentity, dev.PSK.Reveal(), dev.CertFile, dev.KeyFile, dev.CAFile} {
		fmt.Fprintf(h, "%d:%s", len(f), f)
	}
	for _, f := range []string{dev.CertFile, dev.KeyFile, dev.CAFile} {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(h, "|%d:%d", st.Size(), st.ModTime().UnixNano())
		}
	}
	for _, p := range dev.Pins {
		h.Write(p[:])
	}
	return string(h.Sum(nil))
}

// handshake makes sure a DTLS session with addr exists (a no-op when one
// does).
func (d *deviceClients) handshake(ctx context.Context, addr net.Addr) error {
	d.mu.Lock()
	conn := d.secureConn
	d.mu.Unlock()
	if conn == nil {
		return nil
	}
	if err := conn.Handshake(ctx, addr); err != nil {
		return fmt.Errorf("coaps %s: %w", addr, err)
	}
	return nil
}

// Close closes both clients.
func (d *deviceClients) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	var err error
	if d.plain != nil {
		err = errors.Join(err, d.plain.Close())
	}
	if d.secure != nil {
		err = errors.Join(err, d.secure.Close())
	}
	return err
}

// Ping sends a CoAP ping (an empty CON, RFC 7252 §4.3) to host and reports
// whether the device answered; a Reset is the expected answer.
func (d *deviceClients) Ping(ctx context.Context, secure bool, host string) bool {
	c, err := d.client(secure)
	if err != nil {
		return false
	}
	addr, err := d.resolve(ctx, host)
	if err != nil {
		return false
	}
	if secure && d.handshake(ctx, addr) != nil {
		return false
	}
	_, err = c.Endpoint().Send(ctx, addr, &message.Message{Type: message.Confirmable, Code: message.Empty})
	return err == nil || errors.Is(err, coapside.ErrReset)
}
