package bridge

import (
	"fmt"
	"net"

	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/mqttside"
	"github.com/prometheus/client_golang/prometheus"
)

// listenDTLS opens the coaps listener with the configured PSKs and/or
// certificate.
func (b *Bridge) listenDTLS(addr string) (net.PacketConn, error) {
	c := b.cfg.CoAP.DTLS
	cfg := dtls.ServerConfig{Limits: dtls.Limits{Logger: b.log}}
	if c.PSKFile != "" {
		store, err := dtls.LoadPSKFile(c.PSKFile)
		if err != nil {
			return nil, fmt.Errorf("coap.dtls.psk_file: %w", err)
		}
		cfg.PSK = store
	}
	if c.CertFile != "" {
		cert, err := dtls.LoadCertificate(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("coap.dtls.cert_file: %w", err)
		}
		cfg.Certificate = &cert
	}
	if c.ClientCAFile != "" {
		pool, err := dtls.LoadCertPool(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("coap.dtls.client_ca_file: %w", err)
		}
		cfg.ClientCAs = pool
	}
	conn, err := dtls.Listen("udp", addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("coaps listen %s: %w", addr, err)
	}
	return conn, nil
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
		counter("bridge_mqtt_invalid_total", "Publishes rejected by validation.", func(s mqttside.Stats) uint64 { return s.Invalid }),
		counter("bridge_mqtt_received_total", "Messages received on subscriptions.", func(s mqttside.Stats) uint64 { return s.Received }),
		counter("bridge_mqtt_reconnects_total", "Reconnections to the broker.", func(s mqttside.Stats) uint64 { return s.Reconnects }),
	)
}
