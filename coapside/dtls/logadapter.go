package dtls

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogs routes pion's internal logging into slog at Debug level: the
// events operators need (handshake outcomes, drops) are logged by this package
// with structured attributes; pion's own lines are for debugging only.
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) debug(msg string) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("pion", "msg", msg)
	}
}

func (l pionLogger) debugf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("pion", "msg", fmt.Sprintf(format, args...))
	}
}

func (pionLogger) Trace(string)                     {}
func (pionLogger) Tracef(string, ...any)            {}
func (l pionLogger) Debug(msg string)               { l.debug(msg) }
func (l pionLogger) Debugf(format string, a ...any) { l.debugf(format, a...) }
func (l pionLogger) Info(msg string)                { l.debug(msg) }
func (l pionLogger) Infof(format string, a ...any)  { l.debugf(format, a...) }
func (l pionLogger) Warn(msg string)                { l.debug(msg) }
func (l pionLogger) Warnf(format string, a ...any)  { l.debugf(format, a...) }
func (l pionLogger) Error(msg string)               { l.debug(msg) }
func (l pionLogger) Errorf(format string, a ...any) { l.debugf(format, a...) }

// discardLogger is used when no logger is configured.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
