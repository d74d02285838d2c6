package bridge

import (
	"fmt"

	"github.com/coap-mqtt/bridge/coapside"
	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/prometheus/client_golang/prometheus"
)

// listenDTLS opens the coaps listener with the configured PSKs and/or
// certificate, and exports its handshake and session counters.
func (b *Bridge) listenDTLS(addr string) (*dtls.ServerConn, error) {
	c := b.cfg.CoAP.DTLS
	cfg, err := dtls.LoadServerConfig(c.serverFiles(), b.dtlsLimits())
	if err != nil {
		return nil, fmt.Errorf("coap.dtls: %w", err)
	}
	conn, err := dtls.Listen("udp", addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("coaps listen %s: %w", addr, err)
	}
	if cfg.PSK != nil && cfg.PSK.Len() == 0 && cfg.Certificate == nil {
		b.log.Warn("coap.dtls.psk_file holds no keys: no client can connect over coaps until keys are added (it is reloaded with the rules)", "file", c.PSKFile)
	}
	b.mu.Lock()
	b.psk, b.dtlsConn = cfg.PSK, conn
	b.mu.Unlock()
	b.registerDTLSMetrics(conn)
	return conn, nil
}

// serverFiles are the coaps listener's key and certificate files.
func (c DTLSConfig) serverFiles() dtls.ServerFiles {
	return dtls.ServerFiles{PSKFile: c.PSKFile, CertFile: c.CertFile, KeyFile: c.KeyFile, ClientCAFile: c.ClientCAFile}
}

// dtlsLimits are the coaps listener's limits from coap.limits.
func (b *Bridge) dtlsLimits() dtls.Limits {
	l := b.cfg.CoAP.Limits.withDefaults()
	return dtls.Limits{Logger: b.log, MaxHandshakes: l.DTLSHandshakes, MaxHandshakesPerSource: l.DTLSHandshakesPerSource}
}

// registerDTLSMetrics exports a coaps listener's counters.
func (b *Bridge) registerDTLSMetrics(conn *dtls.ServerConn) {
	counter := func(name, help string, f func(dtls.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(conn.Stats())) })
	}
	gauge := func(name, help string, f func(dtls.Stats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f(conn.Stats())) })
	}
	cs := []prometheus.Collector{
		counter("bridge_dtls_handshakes_ok_total", "Completed DTLS handshakes.", func(s dtls.Stats) uint64 { return s.HandshakesOK }),
		counter("bridge_dtls_handshakes_resumed_total", "Completed DTLS handshakes that resumed a cached session (abbreviated; among bridge_dtls_handshakes_ok_total).", func(s dtls.Stats) uint64 { return s.HandshakesResumed }),
		counter("bridge_dtls_resume_refused_total", "Offers of a cached DTLS session refused because its PSK identity was removed or its key changed since.", func(s dtls.Stats) uint64 { return s.ResumeInvalid }),
		counter("bridge_dtls_dropped_unknown_peer_total", "DTLS records (not a ClientHello) from addresses without a session, e.g. a device still using its session after a NAT rebinding; dropped unanswered.", func(s dtls.Stats) uint64 { return s.DroppedUnknownPeer }),
		counter("bridge_dtls_sessions_moved_total", "DTLS sessions ended because their peer resumed them from a new address (NAT rebinding).", func(s dtls.Stats) uint64 { return s.SessionsMoved }),
		gauge("bridge_dtls_handshakes_active", "DTLS handshakes in progress.", func(s dtls.Stats) int64 { return s.HandshakesActive }),
		gauge("bridge_dtls_sessions_active", "Established DTLS sessions.", func(s dtls.Stats) int64 { return s.SessionsActive }),
		counter("bridge_dtls_sessions_expired_total", "DTLS sessions closed for being idle.", func(s dtls.Stats) uint64 { return s.SessionsExpired }),
		counter("bridge_dtls_refused_limit_total", "Handshakes refused by the handshake or session limit.", func(s dtls.Stats) uint64 { return s.RefusedLimit }),
		counter("bridge_dtls_refused_per_source_total", "Handshakes refused because their source address had coap.limits.dtls_handshakes_per_source in progress (among bridge_dtls_refused_limit_total).", func(s dtls.Stats) uint64 { return s.RefusedPerSource }),
		counter("bridge_dtls_refused_malformed_total", "Malformed ClientHellos refused.", func(s dtls.Stats) uint64 { return s.RefusedMalformed }),
		counter("bridge_dtls_refused_cookie_total", "ClientHellos refused for a cookie no handshake in progress issued.", func(s dtls.Stats) uint64 { return s.RefusedCookie }),
		counter("bridge_dtls_handshakes_evicted_total", "Handshakes without a returned cookie ended to make room for a new ClientHello.", func(s dtls.Stats) uint64 { return s.HandshakesEvicted }),
		counter("bridge_dtls_dropped_not_dtls_total", "Datagrams to the DTLS port that were not DTLS (e.g. plaintext CoAP).", func(s dtls.Stats) uint64 { return s.DroppedNotDTLS }),
	}
	failed := prometheus.NewDesc("bridge_dtls_handshakes_failed_total", "Failed DTLS handshakes, by reason.", []string{"reason"}, nil)
	cs = append(cs, collectorFunc{desc: failed, collect: func(ch chan<- prometheus.Metric) {
		s := conn.Stats()
		for _, r := range dtls.FailReasons() {
			ch <- prometheus.MustNewConstMetric(failed, prometheus.CounterValue, float64(s.Failed(r)), r.String())
		}
	}})
	b.reg.MustRegister(cs...)
}

// collectorFunc is a collector for one labelled family read on scrape.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// registerCoAPMetrics exports the CoAP server's message-layer counters,
// summed over its endpoints (UDP and DTLS).
func (b *Bridge) registerCoAPMetrics(srv *coapside.Server) {
	counter := func(name, help string, f func(coapside.StatsSnapshot) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			var n uint64
			for _, ep := range srv.Endpoints() {
				n += f(ep.Stats().Snapshot())
			}
			return float64(n)
		})
	}
	b.reg.MustRegister(
		counter("bridge_coap_received_total", "CoAP datagrams received.", func(s coapside.StatsSnapshot) uint64 { return s.Received }),
		counter("bridge_coap_sent_total", "CoAP datagrams sent, including retransmissions.", func(s coapside.StatsSnapshot) uint64 { return s.Sent }),
		counter("bridge_coap_retransmissions_total", "Confirmable messages retransmitted.", func(s coapside.StatsSnapshot) uint64 { return s.Retransmissions }),
		counter("bridge_coap_timeouts_total", "Confirmable messages never acknowledged.", func(s coapside.StatsSnapshot) uint64 { return s.Timeouts }),
		counter("bridge_coap_malformed_rejected_total", "Malformed confirmable messages answered with RST.", func(s coapside.StatsSnapshot) uint64 { return s.MalformedRejected }),
		counter("bridge_coap_malformed_dropped_total", "Malformed non-confirmable messages dropped.", func(s coapside.StatsSnapshot) uint64 { return s.MalformedDropped }),
		counter("bridge_coap_oversize_total", "Datagrams larger than the CoAP message size limit (requests among them answered 4.13).", func(s coapside.StatsSnapshot) uint64 { return s.Oversize }),
		counter("bridge_coap_bad_option_total", "Requests answered 4.02 Bad Option.", func(s coapside.StatsSnapshot) uint64 { return s.BadOption }),
		counter("bridge_coap_duplicates_total", "Duplicate messages detected (answered from the cache or ignored).", func(s coapside.StatsSnapshot) uint64 { return s.Duplicates }),
		counter("bridge_coap_dedup_evictions_total", "Message IDs forgotten before their exchange lifetime because the duplicate-detection table was full: a retransmission of one is handled again.", func(s coapside.StatsSnapshot) uint64 { return s.DedupEvictions }),
		counter("bridge_coap_peer_evictions_total", "Idle client addresses whose state was dropped because the peer table was full.", func(s coapside.StatsSnapshot) uint64 { return s.PeerEvictions }),
		counter("bridge_coap_read_errors_total", "Failed reads on the CoAP listeners' sockets (a closed socket excluded).", func(s coapside.StatsSnapshot) uint64 { return s.ReadErrors }),
		counter("bridge_coap_write_errors_total", "Failed writes on the CoAP listeners' sockets.", func(s coapside.StatsSnapshot) uint64 { return s.WriteErrors }),
		counter("bridge_coap_reader_restarts_total", "Times a CoAP listener had stopped reading and its watchdog started a reader.", func(s coapside.StatsSnapshot) uint64 { return s.ReaderRestarts }),
		counter("bridge_coap_rate_limited_total", "Requests refused by the per-source rate limit (coap.rate_limit): answered 4.29 or dropped.", func(s coapside.StatsSnapshot) uint64 { return s.RateLimited }),
		counter("bridge_coap_rate_limit_evictions_total", "Sources whose rate-limit bucket was evicted because the source table was full.", func(s coapside.StatsSnapshot) uint64 { return s.RateLimitEvictions }),
		counter("bridge_coap_sources_blocked_total", "Sources dropped by the kernel for coap.rate_block after flooding past their rate limit.", func(s coapside.StatsSnapshot) uint64 { return s.SourcesBlocked }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bridge_coap_blocked_sources", Help: "Sources whose datagrams the kernel drops now (coap.rate_block)."}, func() float64 {
			n := 0
			for _, ep := range srv.Endpoints() {
				n += len(ep.BlockedSources())
			}
			return float64(n)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "bridge_coap_kernel_drops_total", Help: "Datagrams the kernel dropped before the CoAP UDP listener read them: blocked sources and a full receive buffer (Linux)."}, func() float64 {
			var n uint64
			for _, ep := range srv.Endpoints() {
				d, _ := ep.KernelDrops()
				n += d
			}
			return float64(n)
		}),
		counter("bridge_coap_overloaded_total", "Requests answered 5.03 because the server was at its concurrency limit.", func(s coapside.StatsSnapshot) uint64 { return s.Overloaded }),
		counter("bridge_coap_peer_yields_total", "Peers whose confirmable notifications, unacknowledged after three transmissions, were given up (their observers removed) because the peer table was full.", func(s coapside.StatsSnapshot) uint64 { return s.PeerYields }),
		counter("bridge_coap_unreachable_total", "ICMP port unreachable errors received for datagrams a CoAP listener sent (Linux); each ends at once what was pending for that address and removes its observers.", func(s coapside.StatsSnapshot) uint64 { return s.Unreachable }),
	)
	b.registerLimitMetrics(srv)
	b.registerAmplificationMetrics(srv, counter)
}

// registerLimitMetrics exports how often each coap.limits limit refused a
// request: the endpoints' (pending_per_peer), the Block1 layer's and the
// resource observers'.
func (b *Bridge) registerLimitMetrics(srv *coapside.Server) {
	desc := prometheus.NewDesc("bridge_coap_limit_hits_total",
		"Requests refused by a coap.limits resource limit, by limit (observers, observers_per_source, block1_transfers, block1_transfers_per_source, block1_size, pending_per_peer, handlers_per_source).",
		[]string{"limit"}, nil)
	obs := b.resources.obs
	b.reg.MustRegister(collectorFunc{desc: desc, collect: func(ch chan<- prometheus.Metric) {
		h := obs.LimitHits()
		add := func(o coapside.LimitHits) {
			for i := range h {
				h[i] += o[i]
			}
		}
		for _, ep := range srv.Endpoints() {
			add(ep.LimitHits())
		}
		if bw := srv.Blockwise(); bw != nil {
			add(bw.LimitHits())
		}
		for _, l := range coapside.Limits() {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(h[l]), l.String())
		}
	}})
}

// registerAmplificationMetrics exports the amplification bound's counters
// (RFC 7252 §11.3, RFC 9175 Echo) and the verified-address table's size.
func (b *Bridge) registerAmplificationMetrics(srv *coapside.Server, counter func(string, string, func(coapside.StatsSnapshot) uint64) prometheus.Collector) {
	b.reg.MustRegister(
		counter("bridge_coap_echo_challenges_total", "Echo values sent to plain-UDP sources that had not proved their address (with 4.01, or with a small first block).", func(s coapside.StatsSnapshot) uint64 { return s.EchoChallenges }),
		counter("bridge_coap_echo_verified_total", "Source addresses verified by returning an Echo value.", func(s coapside.StatsSnapshot) uint64 { return s.EchoVerified }),
		counter("bridge_coap_echo_rejected_total", "Echo values refused: not issued by the bridge, for another address, or expired.", func(s coapside.StatsSnapshot) uint64 { return s.EchoRejected }),
		counter("bridge_coap_amplification_limited_total", "Answers to unverified sources made smaller (small block, 4.01 + Echo, cut diagnostic, duplicate not replayed) to stay within 3x the request.", func(s coapside.StatsSnapshot) uint64 { return s.AmplificationLimited }),
		counter("bridge_coap_verified_evictions_total", "Verified source addresses forgotten early because the table was full.", func(s coapside.StatsSnapshot) uint64 { return s.VerifiedEvictions }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "bridge_coap_verified_sources", Help: "Verified plain-UDP source addresses remembered."}, func() float64 {
			n := 0
			for _, ep := range srv.Endpoints() {
				n += ep.VerifiedPeers()
			}
			return float64(n)
		}),
	)
}

// registerMQTTMetrics exports the MQTT client's counters.
func (b *Bridge) registerMQTTMetrics(mc mqttside.Client) {
	gauge := func(name, help string, f func(mqttside.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(mc.Stats()) })
	}
	counter := func(name, help string, f func(mqttside.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(mc.Stats())) })
	}
	b.reg.MustRegister(
		gauge("bridge_mqtt_connected", "1 while the MQTT connection is up.", func(s mqttside.Stats) float64 {
			if s.Connected {
				return 1
			}
			return 0
		}),
		gauge("bridge_mqtt_offline_buffer_depth", "Messages waiting in the offline buffer.", func(s mqttside.Stats) float64 { return float64(s.BufferDepth) }),
		counter("bridge_mqtt_published_total", "Messages the broker has taken.", func(s mqttside.Stats) uint64 { return s.Published }),
		counter("bridge_mqtt_failed_total", "Accepted messages that could not be delivered.", func(s mqttside.Stats) uint64 { return s.Failed }),
		counter("bridge_mqtt_buffered_total", "Messages that went through the offline buffer.", func(s mqttside.Stats) uint64 { return s.Buffered }),
		counter("bridge_mqtt_dropped_qos0_total", "QoS 0 messages dropped from a full offline buffer.", func(s mqttside.Stats) uint64 { return s.DroppedQoS0 }),
		counter("bridge_mqtt_refused_total", "QoS 1/2 publishes refused because the offline buffer was full.", func(s mqttside.Stats) uint64 { return s.Refused }),
		counter("bridge_mqtt_withdrawn_total", "Device pushes taken back out of the offline buffer after answering 5.03; never published.", func(s mqttside.Stats) uint64 { return s.Withdrawn }),
		counter("bridge_mqtt_invalid_total", "Publishes rejected by validation.", func(s mqttside.Stats) uint64 { return s.Invalid }),
		counter("bridge_mqtt_received_total", "Messages received on subscriptions.", func(s mqttside.Stats) uint64 { return s.Received }),
		counter("bridge_mqtt_subscriber_drops_total", "Messages the embedded broker dropped on their way to a slow client (full queue or in-flight quota, expired QoS flow).", func(s mqttside.Stats) uint64 { return s.SubscriberDrops }),
		counter("bridge_mqtt_reconnects_total", "Reconnections to the broker.", func(s mqttside.Stats) uint64 { return s.Reconnects }),
		counter("bridge_mqtt_connect_attempts_total", "Connection attempts to a remote broker, successful or not.", func(s mqttside.Stats) uint64 { return s.ConnectAttempts }),
	)
}
