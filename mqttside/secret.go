package mqttside

import "log/slog"

// Secret is a string that never appears in logs or formatted output.
// Use [Secret.Reveal] where the value itself is needed.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String returns a redacted placeholder, or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return s.String() }

// LogValue implements slog.LogValuer so the value is never logged.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
