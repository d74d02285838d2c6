package message

import (
	"strconv"
	"strings"
)

// Code is the 8-bit CoAP code: a 3-bit class and a 5-bit detail, written
// "c.dd" (RFC 7252 §3, §12.1).
//
//	 0 1 2 3 4 5 6 7
//	+-+-+-+-+-+-+-+-+
//	|class|  detail |
//	+-+-+-+-+-+-+-+-+
//
// A Code implements error so a handler can return a response code such as
// BadRequest or NotFound and the server writes it to the wire.
type Code uint8

// Request and response codes registered by RFC 7252 §12.1, RFC 7959, RFC 8132
// and RFC 8516.
const (
	Empty Code = 0x00 // 0.00

	GET    Code = 0x01 // 0.01
	POST   Code = 0x02 // 0.02
	PUT    Code = 0x03 // 0.03
	DELETE Code = 0x04 // 0.04
	FETCH  Code = 0x05 // 0.05, RFC 8132
	PATCH  Code = 0x06 // 0.06, RFC 8132
	IPATCH Code = 0x07 // 0.07, RFC 8132

	Created  Code = 0x41 // 2.01
	Deleted  Code = 0x42 // 2.02
	Valid    Code = 0x43 // 2.03
	Changed  Code = 0x44 // 2.04
	Content  Code = 0x45 // 2.05
	Continue Code = 0x5f // 2.31, RFC 7959

	BadRequest               Code = 0x80 // 4.00
	Unauthorized             Code = 0x81 // 4.01
	BadOption                Code = 0x82 // 4.02
	Forbidden                Code = 0x83 // 4.03
	NotFound                 Code = 0x84 // 4.04
	MethodNotAllowed         Code = 0x85 // 4.05
	NotAcceptable            Code = 0x86 // 4.06
	RequestEntityIncomplete  Code = 0x88 // 4.08, RFC 7959
	Conflict                 Code = 0x89 // 4.09, RFC 8132
	PreconditionFailed       Code = 0x8c // 4.12
	RequestEntityTooLarge    Code = 0x8d // 4.13
	UnsupportedContentFormat Code = 0x8f // 4.15
	UnprocessableEntity      Code = 0x96 // 4.22, RFC 8132
	TooManyRequests          Code = 0x9d // 4.29, RFC 8516

	InternalServerError  Code = 0xa0 // 5.00
	NotImplemented       Code = 0xa1 // 5.01
	BadGateway           Code = 0xa2 // 5.02
	ServiceUnavailable   Code = 0xa3 // 5.03
	GatewayTimeout       Code = 0xa4 // 5.04
	ProxyingNotSupported Code = 0xa5 // 5.05
)

var codeNames = map[Code]string{
	Empty: "Empty", GET: "GET", POST: "POST", PUT: "PUT", DELETE: "DELETE",
	FETCH: "FETCH", PATCH: "PATCH", IPATCH: "iPATCH",
	Created: "Created", Deleted: "Deleted", Valid: "Valid", Changed: "Changed",
	Content: "Content", Continue: "Continue",
	BadRequest: "Bad Request", Unauthorized: "Unauthorized", BadOption: "Bad Option",
	Forbidden: "Forbidden", NotFound: "Not Found", MethodNotAllowed: "Method Not Allowed",
	NotAcceptable: "Not Acceptable", RequestEntityIncomplete: "Request Entity Incomplete",
	Conflict: "Conflict", PreconditionFailed: "Precondition Failed",
	RequestEntityTooLarge:    "Request Entity Too Large",
	UnsupportedContentFormat: "Unsupported Content-Format",
	UnprocessableEntity:      "Unprocessable Entity", TooManyRequests: "Too Many Requests",
	InternalServerError: "Internal Server Error", NotImplemented: "Not Implemented",
	BadGateway: "Bad Gateway", ServiceUnavailable: "Service Unavailable",
	GatewayTimeout: "Gateway Timeout", ProxyingNotSupported: "Proxying Not Supported",
}

// NewCode builds a code from its class (0-7) and detail (0-31).
func NewCode(class, detail uint8) Code { return Code(class<<5 | detail&0x1f) }

// Class returns the 3-bit class: 0 request, 2 success, 4 client error, 5 server error.
func (c Code) Class() uint8 { return uint8(c) >> 5 }

// Detail returns the 5-bit detail.
func (c Code) Detail() uint8 { return uint8(c) & 0x1f }

// IsRequest reports whether c is a method code (class 0, not Empty).
func (c Code) IsRequest() bool { return c != Empty && c.Class() == 0 }

// IsResponse reports whether c is a response code (classes 2-5, RFC 7252 §5.9).
func (c Code) IsResponse() bool { cl := c.Class(); return cl >= 2 && cl <= 5 }

// IsSuccess reports whether c is a 2.xx code.
func (c Code) IsSuccess() bool { return c.Class() == 2 }

// IsError reports whether c is a 4.xx or 5.xx code.
func (c Code) IsError() bool { cl := c.Class(); return cl == 4 || cl == 5 }

// Dotted returns the "c.dd" form, e.g. "2.05".
func (c Code) Dotted() string {
	b := make([]byte, 0, 4)
	b = append(b, '0'+c.Class(), '.', '0'+c.Detail()/10, '0'+c.Detail()%10)
	return string(b)
}

// String returns the dotted form and the registered name, e.g. "2.05 Content";
// method codes print as their name ("GET").
func (c Code) String() string {
	name, ok := codeNames[c]
	if c.IsRequest() && ok {
		return name
	}
	if !ok {
		return c.Dotted()
	}
	return c.Dotted() + " " + name
}

// Error implements error so a response code can be returned from a handler.
// It equals String, so fmt's %v prints the same either way.
func (c Code) Error() string { return c.String() }

// ParseMethod returns the method code for a method name: GET, POST, PUT,
// DELETE, FETCH, PATCH or iPATCH (RFC 7252 §12.1.1, RFC 8132), in any
// case. This is the one reading of method names, used by rule files and
// ServeMux patterns alike.
func ParseMethod(s string) (Code, bool) {
	for c := GET; c <= IPATCH; c++ {
		if strings.EqualFold(codeNames[c], s) {
			return c, true
		}
	}
	return 0, false
}

// ParseCode parses the dotted form "c.dd" (e.g. "4.04").
func ParseCode(s string) (Code, bool) {
	if len(s) != 4 || s[1] != '.' {
		return 0, false
	}
	cl, err := strconv.Atoi(s[:1])
	if err != nil || cl > 7 {
		return 0, false
	}
	d, err := strconv.Atoi(s[2:])
	if err != nil || d > 31 {
		return 0, false
	}
	return NewCode(uint8(cl), uint8(d)), true
}
