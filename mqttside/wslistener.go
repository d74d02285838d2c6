package mqttside

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener serves MQTT over WebSocket (MQTT 3.1.1 §6) for the embedded
// broker. Unlike mochi's own WebSocket listener it binds in Init, so the
// bound address (of ":0") is known and bind errors reach Start.
type wsListener struct {
	id      string
	address string
	ln      net.Listener
	srv     *http.Server
	log     *slog.Logger
	up      websocket.Upgrader
	once    sync.Once
}

var _ listeners.Listener = (*wsListener)(nil)

func newWSListener(id, address string) *wsListener {
	return &wsListener{
		id:      id,
		address: address,
		up: websocket.Upgrader{
			// MQTT over WebSocket uses the "mqtt" subprotocol [MQTT-6.0.0-3].
			Subprotocols: []string{"mqtt"},
			// Browsers on any origin may connect; authentication is the
			// broker's job (auth file).
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
}

// ID names the listener in mochi.
func (l *wsListener) ID() string { return l.id }

// Protocol reports "ws".
func (l *wsListener) Protocol() string { return "ws" }

// Address returns the bound address once Init has run.
func (l *wsListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the address, so errors reach Start.
func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// Serve accepts WebSocket upgrades until Close; mochi runs it on its own
// goroutine and each connection is served by net/http.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := l.up.Upgrade(w, r, nil)
			if err != nil {
				return // Upgrade already answered with an HTTP error
			}
			defer c.Close()
			if err := establish(l.id, &wsConn{Conn: c.NetConn(), ws: c}); err != nil {
				l.log.Debug("mqtt websocket client ended", "err", err)
			}
		}),
	}
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("mqtt websocket listener stopped", "err", err)
	}
}

// Close disconnects the listener's clients and stops the HTTP server.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.once.Do(func() {
		closeClients(l.id)
		if l.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = l.srv.Shutdown(ctx)
		} else if l.ln != nil {
			_ = l.ln.Close()
		}
	})
}

// wsConn presents a WebSocket as a byte stream: MQTT packets may span
// WebSocket messages and one message may hold several packets
// [MQTT-6.0.0-2]. Only binary messages are allowed [MQTT-6.0.0-1].
type wsConn struct {
	net.Conn // addresses and deadlines of the underlying connection
	ws       *websocket.Conn
	r        io.Reader
	wmu      sync.Mutex
}

var errWSText = errors.New("mqtt: websocket message is not binary")

// Read returns bytes of binary messages, moving on to the next message
// when one is used up.
func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errWSText
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message; writes are serialised because a
// WebSocket allows one writer at a time.
func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the WebSocket and its connection.
func (c *wsConn) Close() error { return c.ws.Close() }
