package bridge

import (
	"log/slog"

	"github.com/coap-mqtt/bridge/mqttside"
)

// mqttOptions maps the [mqtt] config section onto mqttside options.
func mqttOptions(c MQTTConfig, log *slog.Logger, onEvent mqttside.EventFunc) mqttside.Options {
	return mqttside.Options{
		Broker:   c.Broker,
		ClientID: c.ClientID,
		Username: c.Username,
		Password: c.Password,
		TLS: mqttside.TLSOptions{
			CAFile:     c.CAFile,
			CertFile:   c.CertFile,
			KeyFile:    c.KeyFile,
			ServerName: c.ServerName,
		},
		BufferSize:  c.BufferSize,
		MaxPayload:  c.MaxPayload,
		StatusTopic: c.StatusTopic,
		// Rule templates never render an empty level; one reaches a
		// publish only where it mirrors the topic a client used: a
		// command's result on its response topic, or an MQTT 5
		// response topic.
		AllowEmptyLevels: true,
		Embedded: mqttside.EmbeddedOptions{
			Listen:         c.Embedded.Listen,
			WebSocket:      c.Embedded.Websocket,
			AuthFile:       c.Embedded.AuthFile,
			PersistenceDir: c.Embedded.PersistenceDir,
			MaxPayload:     c.MaxPayload,
			Logger:         log,
			OnEvent:        onEvent,
		},
		Logger:  log,
		OnEvent: onEvent,
	}
}

// maxPayload is the largest MQTT payload the bridge takes (mqtt.max_payload).
func (b *Bridge) maxPayload() int {
	if b.cfg.MQTT.MaxPayload > 0 {
		return b.cfg.MQTT.MaxPayload
	}
	return mqttside.DefaultMaxPayload
}
