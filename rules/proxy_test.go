package rules

import (
	"errors"
	"slices"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// TestMatchProxy: forward and HTTP requests find the proxy rule whose url
// takes the device and path, for the rule's methods and (forward) its
// scheme only; the most specific url wins; captures render the target.
func TestMatchProxy(t *testing.T) {
	s := mustLoad(t, `
[[device]]
name = "d1"
url  = "coap://10.0.0.1:5690"

[[proxy]]
name    = "all"
forward = true
http    = true
url     = "coap://{device}/{path...}"

[[proxy]]
name    = "d1-config"
forward = true
methods = ["GET", "PUT"]
url     = "coap://d1/config/{key}"

[[proxy]]
name = "reverse"
path = "/dev/{device}/{path...}"
url  = "coap://{device}/{path...}"

[[proxy]]
name    = "secure"
forward = true
url     = "coaps://{device}/s/{path...}"
`)
	plain, secure := false, true
	tests := []struct {
		via    ProxyVia
		scheme *bool
		device string
		segs   []string
		m      message.Code
		rule   string
		err    error
	}{
		{ViaForward, &plain, "d1", []string{"temp"}, message.GET, "all", nil},
		{ViaForward, &plain, "d1", []string{"config", "mode"}, message.PUT, "d1-config", nil},
		{ViaForward, &plain, "d2", []string{"config", "mode"}, message.GET, "all", nil},
		{ViaForward, &plain, "d1", []string{"temp"}, message.PUT, "", ErrMethodNotAllowed},
		{ViaForward, &secure, "d1", []string{"s", "x"}, message.GET, "secure", nil},
		{ViaForward, &secure, "d1", []string{"temp"}, message.GET, "", ErrNoRoute},
		{ViaHTTP, nil, "d1", []string{"temp"}, message.GET, "all", nil},
		{ViaHTTP, nil, "d1", []string{"s", "x"}, message.GET, "all", nil},
		{ViaForward, &plain, "d1", []string{"a", ".."}, message.GET, "", ErrEscape},
		{ViaForward, &plain, "d1", nil, message.GET, "", ErrNoRoute}, // {path...} needs a segment
	}
	for _, tc := range tests {
		r, caps, err := s.MatchProxy(tc.via, tc.scheme, tc.device, tc.segs, tc.m)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%v %s %v %v: err %v, want %v", tc.via, tc.device, tc.segs, tc.m, err, tc.err)
			}
			continue
		}
		if err != nil || r.Name != tc.rule {
			t.Errorf("%v %s %v %v: rule %v err %v, want %s", tc.via, tc.device, tc.segs, tc.m, r, err, tc.rule)
			continue
		}
		tg, err := s.ProxyTarget(r, caps)
		if err != nil {
			t.Fatalf("target: %v", err)
		}
		if tg.Name != tc.device || !slices.Equal(tg.Path, tc.segs) {
			t.Errorf("%s %v: target %s %v", tc.device, tc.segs, tg.Name, tg.Path)
		}
		if tg.Learned != (tc.device != "d1") || tc.device == "d1" && tg.Host != "10.0.0.1:5690" {
			t.Errorf("%s: target %+v", tc.device, tg)
		}
	}
	// The reverse rule is a route of the CoAP server, not a forward rule.
	route, caps, err := s.MatchPath(message.GET, []string{"dev", "d1", "a", "b"}, nil)
	if err != nil || route.Proxy == nil || route.Proxy.Name != "reverse" {
		t.Fatalf("MatchPath: %v %v", route, err)
	}
	tg, err := s.ProxyTarget(route.Proxy, caps)
	if err != nil || tg.Name != "d1" || !slices.Equal(tg.Path, []string{"a", "b"}) {
		t.Fatalf("reverse target %+v %v", tg, err)
	}
	if _, _, err := s.MatchPath(message.POST, []string{"dev", "d1", "a"}, nil); !errors.Is(err, ErrMethodNotAllowed) {
		t.Fatalf("POST on a GET-only proxy path: %v", err)
	}
}
