package rules

import (
	"fmt"
	"strconv"
	"strings"
)

// Method is a CoAP request method; its value is the code detail of class 0
// (RFC 7252 §12.1.1, RFC 8132 §6 for FETCH, PATCH and iPATCH).
type Method uint8

// CoAP request methods.
const (
	GET    Method = 1
	POST   Method = 2
	PUT    Method = 3
	DELETE Method = 4
	FETCH  Method = 5
	PATCH  Method = 6
	IPATCH Method = 7
)

var methodNames = [...]string{GET: "GET", POST: "POST", PUT: "PUT", DELETE: "DELETE", FETCH: "FETCH", PATCH: "PATCH", IPATCH: "iPATCH"}

// String returns the method name as RFC 7252 and RFC 8132 spell it.
func (m Method) String() string {
	if int(m) < len(methodNames) && methodNames[m] != "" {
		return methodNames[m]
	}
	return "0." + strconv.Itoa(int(m))
}

// ParseMethod parses a method name (case-insensitive).
func ParseMethod(s string) (Method, error) {
	for m, name := range methodNames {
		if name != "" && strings.EqualFold(name, s) {
			return Method(m), nil
		}
	}
	return 0, fmt.Errorf("unknown method %q (want GET, POST, PUT, DELETE, FETCH, PATCH or iPATCH)", clip(s))
}

// ContentFormat is a CoAP Content-Format number (RFC 7252 §12.3).
type ContentFormat uint16

// Content-Format numbers from the CoAP registry.
const (
	TextPlain   ContentFormat = 0   // text/plain;charset=utf-8, RFC 7252 §12.3
	LinkFormat  ContentFormat = 40  // application/link-format, RFC 6690
	XML         ContentFormat = 41  // application/xml
	OctetStream ContentFormat = 42  // application/octet-stream
	EXI         ContentFormat = 47  // application/exi
	JSON        ContentFormat = 50  // application/json, RFC 8259
	CBOR        ContentFormat = 60  // application/cbor, RFC 8949
	SenMLJSON   ContentFormat = 110 // application/senml+json, RFC 8428 §12.3
	SenMLCBOR   ContentFormat = 112 // application/senml+cbor, RFC 8428 §12.3
)

var formatNames = map[ContentFormat]string{
	TextPlain:   "text",
	LinkFormat:  "link-format",
	XML:         "xml",
	OctetStream: "octet-stream",
	EXI:         "exi",
	JSON:        "json",
	CBOR:        "cbor",
	SenMLJSON:   "senml+json",
	SenMLCBOR:   "senml+cbor",
}

// String returns the short name used in rule files, or the number.
func (cf ContentFormat) String() string {
	if n, ok := formatNames[cf]; ok {
		return n
	}
	return strconv.Itoa(int(cf))
}

// ParseContentFormat accepts a short name ("text", "json", "cbor",
// "senml+json", ...), a media type ("application/cbor") or a number 0-65535.
func ParseContentFormat(s string) (ContentFormat, error) {
	name := strings.TrimPrefix(strings.ToLower(s), "application/")
	if name == "text/plain" || name == "text/plain;charset=utf-8" {
		name = "text"
	}
	for cf, n := range formatNames {
		if n == name {
			return cf, nil
		}
	}
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		return ContentFormat(n), nil
	}
	return 0, fmt.Errorf("unknown content format %q (want text, json, cbor, senml+json, senml+cbor, octet-stream, ... or a number)", clip(s))
}
