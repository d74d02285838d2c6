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
		Password: mqttside.Secret(c.Password.Reveal()),
		Embedded: mqttside.EmbeddedOptions{
			Listen:    c.Embedded.Listen,
			WebSocket: c.Embedded.Websocket,
			AuthFile:  c.Embedded.AuthFile,
			Logger:    log,
			OnEvent:   onEvent,
		},
		Logger:  log,
		OnEvent: onEvent,
	}
}
