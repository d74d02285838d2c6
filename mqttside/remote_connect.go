package mqttside

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Start connects to the broker. Subscriptions and publishes made before
// Start wait for the connection like those made while disconnected.
// A broker that refuses the connection
// returns an error wrapping ErrBrokerRefused and naming the broker. A
// broker that cannot be reached is retried in the background with
// exponential backoff; Start then returns nil and State stays
// StateConnecting until the connection is up.
func (r *Remote) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.started || r.closing {
		r.mu.Unlock()
		return fmt.Errorf("%w: Start called twice or after Close", ErrInvalidOptions)
	}
	r.started = true
	r.mu.Unlock()
	r.setState(StateConnecting, nil)

	r.wg.Add(3) // dispatch, settle and run
	go r.dispatch()
	go r.settle()

	tok := r.connect()
	if tok == nil {
		r.wg.Done()      // run not started
		return ErrClosed // closed meanwhile
	}
	select {
	case <-tok.Done():
	case <-ctx.Done():
		// Start's context bounds the wait, not the connection: keep
		// trying in the background like for an unreachable broker.
		r.log.Warn("mqtt broker not answering yet, still connecting in background", "err", ctx.Err())
		go r.run(tok, nil)
		return nil
	}
	err := tok.Error()
	switch {
	case err == nil:
		go r.run(tok, nil)
		// Paho runs the connect handler on its own goroutine; wait for it
		// so that State is StateConnected when Start returns.
		select {
		case <-r.up:
		case <-ctx.Done():
		}
		return nil
	case isRefusal(err):
		r.wg.Done() // run not started
		r.mu.Lock()
		r.closing = true
		r.mu.Unlock()
		r.setState(StateClosed, err)
		r.shutdown(context.Background())
		return fmt.Errorf("%w: %s: %w", ErrBrokerRefused, r.broker, err)
	}
	r.log.Warn("mqtt broker unreachable, retrying in background", "err", err)
	r.emit(Event{State: StateConnecting, Err: err})
	go r.run(nil, err)
	return nil
}

// connect makes one connection attempt, or returns nil once Close has
// begun to shut down.
func (r *Remote) connect() paho.Token {
	r.connMu.Lock()
	defer r.connMu.Unlock()
	select {
	case <-r.stop:
		return nil
	default:
	}
	r.cnt.attempts.Add(1)
	r.store.expectResume()
	return r.pc.Connect()
}

// run owns the connection until Close. Whenever the client is not
// connected it makes the next attempt after the backoff delay, measured
// from the failed attempt or from the lost connection, so the time from a
// broker coming back to the client being connected is at most MaxBackoff
// however often the broker went away. A connection that stayed up for
// MaxBackoff resets the delay to MinBackoff; one dropped sooner keeps it
// growing, so a broker that cuts every connection is not hammered.
//
// pending is an attempt already made (nil: none); failed is the error of
// the attempt Start made and logged (nil: none).
func (r *Remote) run(pending paho.Token, failed error) {
	defer r.wg.Done()
	b := newBackoff(r.opts.MinBackoff, r.opts.MaxBackoff)
	attempt := 1 // in this outage
	lastErr := ""
	if failed != nil {
		lastErr = failed.Error()
	}
	var lostAt time.Time // zero before the first connection
	for {
		if pending == nil {
			d := b.wait()
			t := time.NewTimer(d)
			select {
			case <-r.stop:
				t.Stop()
				return
			case <-t.C:
			}
			attempt++
			r.log.Debug("mqtt connecting", "attempt", attempt, "waited", d)
			if pending = r.connect(); pending == nil {
				return
			}
		}
		select {
		case <-pending.Done():
		case <-r.stop:
			return
		}
		err := pending.Error()
		pending = nil
		if err != nil {
			r.connectFailed(err, attempt, b.peek(), lastErr)
			lastErr = err.Error()
			continue
		}

		upAt := time.Now()
		if lostAt.IsZero() {
			r.log.Info("mqtt connected")
		} else {
			r.log.Info("mqtt connected", "attempts", attempt, "down_for", upAt.Sub(lostAt).Round(time.Millisecond))
		}
		select {
		case <-r.lost:
		case <-r.stop:
			return
		}
		lostAt = time.Now()
		if lostAt.Sub(upAt) >= r.opts.MaxBackoff {
			b.reset()
		}
		attempt, lastErr = 0, ""
	}
}

// connectFailed logs a failed attempt: at warn (error for a refusal) the
// first time and whenever the reason changes, at debug while it repeats,
// so an outage is visible without a line every few seconds. Until the
// first connection each new reason is also an event; after a loss the
// StateDisconnected event has said what matters.
func (r *Remote) connectFailed(err error, attempt int, retryIn time.Duration, lastErr string) {
	switch {
	case err.Error() == lastErr:
		r.log.Debug("mqtt connection attempt failed", "attempt", attempt, "retry_in", retryIn, "err", err)
		return
	case isRefusal(err):
		r.log.Error("mqtt broker refused connection", "attempt", attempt, "retry_in", retryIn, "err", err)
	default:
		r.log.Warn("mqtt broker unreachable", "attempt", attempt, "retry_in", retryIn, "err", err)
	}
	if r.State() == StateConnecting {
		r.emit(Event{State: StateConnecting, Err: err})
	}
}

// isRefusal reports a failure that retrying will not fix: a CONNACK
// refusal with return code 1, 2, 4 or 5 [MQTT-3.2.2.3], or a broker
// certificate that does not verify.
func isRefusal(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &verify) {
		return true
	}
	return errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) ||
		errors.Is(err, packets.ErrorRefusedNotAuthorised) ||
		errors.Is(err, packets.ErrorRefusedIDRejected) ||
		errors.Is(err, packets.ErrorRefusedBadProtocolVersion)
}

func (r *Remote) onConnect(c paho.Client) {
	if r.ever.Swap(true) {
		r.cnt.reconnects.Add(1)
	}
	// Let Paho's session resume take its inventory first (see
	// copyingStore.expectResume).
	t := time.NewTimer(r.opts.ConnectTimeout)
	select {
	case <-r.store.resumed():
	case <-t.C:
		r.log.Debug("mqtt session resume not seen, continuing")
	case <-r.stop:
	}
	t.Stop()
	r.mu.Lock()
	subs := make(map[string]remoteSub, len(r.subs))
	for f, s := range r.subs {
		subs[f] = s
	}
	var unsubs []string
	for f := range r.unsubs {
		unsubs = append(unsubs, f)
	}
	clear(r.unsubs)
	r.mu.Unlock()

	// Resubscribe: the broker may have lost the session (restart without
	// persistence). Routes were registered by Subscribe, so one callback
	// per filter keeps working; SubscribeMultiple needs one handler, so
	// subscribe filter by filter.
	for f, s := range subs {
		tok := c.Subscribe(f, s.qos, s.cb)
		go r.checkSubscribe(tok, f) // ends with the token or at Close
	}
	if len(unsubs) > 0 {
		c.Unsubscribe(unsubs...)
	}
	if r.opts.StatusTopic != "-" {
		c.Publish(r.opts.StatusTopic, 1, true, "online")
	}
	r.epoch.Add(1)
	r.setState(StateConnected, nil)
	r.upOnce.Do(func() { close(r.up) })
	r.signal()
}

func (r *Remote) checkSubscribe(tok paho.Token, filter string) {
	select {
	case <-tok.Done():
	case <-r.stop:
		return
	}
	err := subscribeResult(tok, filter)
	switch {
	case errors.Is(err, ErrSubscribeRefused):
		// The broker will not have it: forget it as Subscribe does.
		r.log.Error("mqtt subscription refused by broker, dropped", "filter", filter)
		r.mu.Lock()
		delete(r.subs, filter)
		r.mu.Unlock()
		r.pc.Unsubscribe(filter)
	case err != nil:
		// Lost the connection again: the next onConnect retries.
		r.log.Warn("mqtt subscribe failed", "filter", filter, "err", err)
	}
}

// onConnectionLost is Paho's handler for a connection that went away
// other than by Close; run reconnects.
func (r *Remote) onConnectionLost(_ paho.Client, err error) {
	r.log.Warn("mqtt connection lost, buffering publishes", "err", err)
	r.setState(StateDisconnected, err)
	select {
	case r.lost <- struct{}{}:
	default:
	}
}
