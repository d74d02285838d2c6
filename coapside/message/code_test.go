package message

import (
	"errors"
	"fmt"
	"testing"
)

func TestCodeString(t *testing.T) {
	tests := []struct {
		c    Code
		want string
	}{
		{GET, "GET"},
		{IPATCH, "iPATCH"},
		{Empty, "0.00 Empty"},
		{Content, "2.05 Content"},
		{Created, "2.01 Created"},
		{BadOption, "4.02 Bad Option"},
		{NotFound, "4.04 Not Found"},
		{UnsupportedContentFormat, "4.15 Unsupported Content-Format"},
		{ServiceUnavailable, "5.03 Service Unavailable"},
		{NewCode(2, 31), "2.31 Continue"},
		{NewCode(4, 30), "4.30"},
		{NewCode(0, 20), "0.20"},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.want {
			t.Fatalf("%#x: %q, want %q", uint8(tt.c), got, tt.want)
		}
	}
}

func TestCodeClasses(t *testing.T) {
	if !GET.IsRequest() || Empty.IsRequest() || Content.IsRequest() {
		t.Fatal("IsRequest")
	}
	if !Content.IsResponse() || !ServiceUnavailable.IsResponse() || GET.IsResponse() || NewCode(7, 0).IsResponse() {
		t.Fatal("IsResponse")
	}
	if !NotFound.IsError() || Content.IsError() || !Changed.IsSuccess() {
		t.Fatal("IsError/IsSuccess")
	}
	if NotFound.Class() != 4 || NotFound.Detail() != 4 {
		t.Fatal("class/detail")
	}
}

func TestCodeAsError(t *testing.T) {
	var err error = fmt.Errorf("lookup: %w", NotFound)
	var c Code
	if !errors.As(err, &c) || c != NotFound {
		t.Fatalf("errors.As = %v", c)
	}
	if NotFound.Error() != "4.04 Not Found" || fmt.Sprint(GET) != "GET" {
		t.Fatalf("Error() = %q", NotFound.Error())
	}
}

func TestParseCodeAndMethod(t *testing.T) {
	if c, ok := ParseCode("4.04"); !ok || c != NotFound {
		t.Fatal("4.04")
	}
	for _, bad := range []string{"", "4.4", "8.00", "4.32", "a.bc"} {
		if _, ok := ParseCode(bad); ok {
			t.Fatalf("ParseCode(%q) ok", bad)
		}
	}
	// One case rule for every reader of method names: any case.
	for _, tt := range []struct {
		in   string
		want Code
	}{{"DELETE", DELETE}, {"get", GET}, {"Post", POST}, {"PUT", PUT}, {"fetch", FETCH}, {"PATCH", PATCH}, {"iPATCH", IPATCH}, {"IPATCH", IPATCH}, {"ipatch", IPATCH}} {
		if c, ok := ParseMethod(tt.in); !ok || c != tt.want {
			t.Errorf("ParseMethod(%q) = %v, %v", tt.in, c, ok)
		}
	}
	for _, bad := range []string{"", "LINK", "Empty", "Content", "0.01", "GET "} {
		if c, ok := ParseMethod(bad); ok {
			t.Errorf("ParseMethod(%q) = %v", bad, c)
		}
	}
}

// TestCodeDotted: every code prints as class "." two-digit detail
// (RFC 7252 §3, "c.dd"), which command replies carry as their code.
func TestCodeDotted(t *testing.T) {
	for i := range 256 {
		c := Code(i)
		if got, want := c.Dotted(), fmt.Sprintf("%d.%02d", i>>5, i&0x1f); got != want {
			t.Fatalf("Code(%#x).Dotted() = %q, want %q", i, got, want)
		}
	}
}
