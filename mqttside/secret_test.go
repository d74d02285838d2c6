package mqttside

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecretNeverPrinted(t *testing.T) {
	const pw = "hunter2-very-secret"
	s := Secret(pw)
	var logs bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&logs, nil))
	l.Info("connect", "password", s, "opts", RemoteOptions{Password: s})
	l.Info("text", slog.Any("password", s))
	out := logs.String() + fmt.Sprint(s) + fmt.Sprintf("%v %+v %#v %s", s, RemoteOptions{Password: s}, s, s)
	if strings.Contains(out, pw) {
		t.Fatalf("secret leaked: %s", out)
	}
	if !strings.Contains(out, redacted) {
		t.Fatalf("no redaction marker in %s", out)
	}
	if s.Reveal() != pw {
		t.Fatal("Reveal lost the value")
	}
	if Secret("").String() != "" {
		t.Fatal("empty secret should print empty")
	}
}
