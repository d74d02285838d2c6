package rules

import (
	"errors"
	"strings"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

func TestPrepare(t *testing.T) {
	s := mustLoad(t, `
[[ingress]]
name  = "plain"
path  = "/p/{device}/{metric}"
topic = "p/{device}/{metric}"
qos   = 1
retain = true

[[ingress]]
name    = "json"
path    = "/j/{device}"
topic   = "j/{device}"
payload = "json"

[[ingress]]
name  = "filtered"
path  = "/f/{device}"
topic = "f/{device}"
where = "payload.temp > 20 && captures.device != 'blocked' && content_format == 50"

[[ingress]]
name      = "reshaped"
path      = "/r/{device}"
topic     = "r/{device}"
transform = '{"device": device, "celsius": payload.temp, "path": path, "at": timestamp.Unix(), "who": identity}'

[[ingress]]
name  = "typed"
path  = "/t/{device}"
topic = "t/{device}"
where = "payload.on"
`)
	byName := map[string]*Ingress{}
	for _, r := range s.Ingress {
		byName[r.Name] = r
	}
	jsonMsg := func(b string) Message {
		return Message{Payload: Payload{Data: []byte(b), Format: message.AppJSON, HasFormat: true}, Path: "/x", Device: "gh1", Identity: "id-1", Time: testNow}
	}
	tests := []struct {
		rule    string
		caps    Captures
		msg     Message
		topic   string
		payload string
		keep    bool
		err     error
	}{
		{"plain", Captures{{"device", "gh1"}, {"metric", "temp"}}, Message{Payload: Payload{Data: []byte{1, 2}}}, "p/gh1/temp", "\x01\x02", true, nil},
		{"plain", Captures{{"device", "gh1/x"}, {"metric", "temp"}}, Message{}, "", "", false, ErrEscape},
		{"json", Captures{{"device", "gh1"}}, Message{Payload: Payload{Data: []byte("21.5"), Format: message.TextPlain, HasFormat: true}}, "j/gh1", "21.5", true, nil},
		{"json", Captures{{"device", "gh1"}}, Message{Payload: Payload{Data: []byte{0xff}, Format: message.AppCBOR, HasFormat: true}}, "", "", false, ErrConvert},
		{"filtered", Captures{{"device", "gh1"}}, jsonMsg(`{"temp": 25}`), "f/gh1", `{"temp": 25}`, true, nil},
		{"filtered", Captures{{"device", "gh1"}}, jsonMsg(`{"temp": 15}`), "", "", false, nil},
		{"filtered", Captures{{"device", "blocked"}}, jsonMsg(`{"temp": 25}`), "", "", false, nil},
		{"filtered", Captures{{"device", "gh1"}}, jsonMsg(`{"temp": "hot"}`), "", "", false, ErrExpr},
		{"reshaped", Captures{{"device", "gh1"}}, jsonMsg(`{"temp": 25}`), "r/gh1", `{"at":1700000000,"celsius":25,"device":"gh1","path":"/x","who":"id-1"}`, true, nil},
		{"typed", Captures{{"device", "gh1"}}, jsonMsg(`{"on": "yes"}`), "", "", false, ErrExpr},
		{"typed", Captures{{"device", "gh1"}}, jsonMsg(`{"on": true}`), "t/gh1", `{"on": true}`, true, nil},
	}
	for i, tc := range tests {
		r := byName[tc.rule]
		pub, keep, err := r.Prepare(tc.caps, tc.msg)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%d %s: err = %v, want %v", i, tc.rule, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%d %s: %v", i, tc.rule, err)
			continue
		}
		if keep != tc.keep {
			t.Errorf("%d %s: keep = %v", i, tc.rule, keep)
			continue
		}
		if keep && (pub.Topic != tc.topic || string(pub.Payload) != tc.payload) {
			t.Errorf("%d %s: published %q %q, want %q %q", i, tc.rule, pub.Topic, pub.Payload, tc.topic, tc.payload)
		}
		if tc.rule == "plain" && (pub.QoS != 1 || !pub.Retain) {
			t.Errorf("plain: qos %d retain %v", pub.QoS, pub.Retain)
		}
	}
}

func TestCompileExpressions(t *testing.T) {
	tests := []struct {
		src   string
		where bool
		err   string
	}{
		{"payload.temp > 20", true, ""},
		{"len(captures) > 0 && topic startsWith 'a/'", true, ""},
		{"timestamp.Year() > 2000", true, ""},
		{"content_format", true, "expected bool"},
		{"1 +", true, "unexpected token"},
		{"nosuch", false, "unknown name nosuch"},
		{"{'a': payload}", false, ""},
		{"device + 1", false, "mismatched types"},
	}
	for _, tc := range tests {
		var err error
		if tc.where {
			_, err = CompileWhere(tc.src)
		} else {
			_, err = CompileTransform(tc.src)
		}
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.src, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: err = %v, want %q", tc.src, err, tc.err)
		}
	}
}
