package mqttside

import (
	"context"
	"log/slog"
	"net"
	"strings"
)

// packetFilter wraps the handler given to mochi so that whole MQTT packets
// never reach the logs: mochi attaches them as "pk" or "packet" to some
// warnings, and a CONNECT packet carries the client's password.
type packetFilter struct {
	slog.Handler
}

func newPacketFilter(l *slog.Logger) *slog.Logger {
	return slog.New(packetFilter{Handler: l.Handler()})
}

func isPacketAttr(a slog.Attr) bool { return a.Key == "pk" || a.Key == "packet" }

// Handle drops packet attributes from the record. mochi's record without
// a message (a client connection's read ending) gets one, at debug level
// when the connection ended because its listener closed (the broker
// stopping).
func (h packetFilter) Handle(ctx context.Context, r slog.Record) error {
	drop := false
	r.Attrs(func(a slog.Attr) bool {
		drop = drop || isPacketAttr(a)
		return !drop
	})
	if r.Message == "" {
		r.Message = "mqtt client connection ended"
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" && strings.Contains(a.Value.String(), net.ErrClosed.Error()) {
				r.Level = slog.LevelDebug
			}
			return true
		})
		if !h.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}
	if !drop {
		return h.Handler.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if !isPacketAttr(a) {
			out.AddAttrs(a)
		}
		return true
	})
	return h.Handler.Handle(ctx, out)
}

// WithAttrs keeps the filter on derived loggers.
func (h packetFilter) WithAttrs(as []slog.Attr) slog.Handler {
	kept := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		if !isPacketAttr(a) {
			kept = append(kept, a)
		}
	}
	return packetFilter{Handler: h.Handler.WithAttrs(kept)}
}

// WithGroup keeps the filter on derived loggers.
func (h packetFilter) WithGroup(name string) slog.Handler {
	return packetFilter{Handler: h.Handler.WithGroup(name)}
}
