// Package httpcoap maps HTTP requests to CoAP requests and CoAP responses
// back to HTTP responses, following RFC 8075 ("Guidelines for Mapping
// Implementations: HTTP to CoAP") and RFC 7252 §10.2. It is the HTTP side of
// the bridge's HTTP-to-CoAP proxy; it knows neither devices, nor rules, nor
// the cache: the bridge plugs those in as a Forwarder.
//
// # URI mapping (RFC 8075 §5.2)
//
// The bridge is a reverse proxy with a null mapping: the hosting HTTP URI
// names a device, not a coap:// URI, and the Forwarder resolves the device
// to its CoAP endpoint. Under Handler.Prefix ("/coap/"):
//
//	/coap/{device}/{segment}/{segment}?{arg}&{arg}
//
// Each path segment after the device is percent-decoded into one Uri-Path
// value, so "%2F" stays inside its segment; each '&'-separated query
// argument into one Uri-Query value (RFC 7252 §6.4). "/coap/{device}" and
// "/coap/{device}/" address the device's root resource. An empty segment, a
// "." or ".." segment, a malformed escape, a value that is not UTF-8 or is
// longer than 255 bytes (RFC 7252 §5.10.1) gets 400 Bad Request; a path
// outside the prefix 404.
//
// # Methods (RFC 7252 §10.2)
//
// GET, POST, PUT and DELETE become the CoAP method of the same name. HEAD
// becomes a CoAP GET whose response is sent without its body (§10.2.3).
// OPTIONS, TRACE and CONNECT get 501 Not Implemented (§10.2.1, §10.2.7); any
// other method 405 Method Not Allowed with an Allow header. GET, HEAD and
// DELETE requests must not carry a body (400).
//
// # Media types (RFC 8075 §6)
//
// A request body's Content-Type is mapped to a Content-Format through the
// registry in coapside/message (§6.4, without the optional loose mapping of
// §6.3); a media type with no Content-Format, application/coap-payload
// (§6.2) or a Content-Encoding other than identity gets 415 Unsupported
// Media Type. A request without Content-Type is sent without
// Content-Format. A response's Content-Format becomes its Content-Type; a
// number the registry does not know becomes "application/coap-payload;cf=N"
// (§6.2).
//
// The Accept header is read with its q-values: the most preferred media
// range the bridge can serve decides. "*/*" or "type/*" means no CoAP
// Accept option (§6.1); a media type with a Content-Format (for example
// application/cbor) is sent as the CoAP Accept option; media types with no
// Content-Format are ignored (§6.1). application/json is not forwarded:
// the device answers in its own format and a successful response is
// converted to JSON with rules.ToJSON (content transcoding, §6.5): CBOR,
// SenML JSON or CBOR (resolved records) and text. A response the
// conversion cannot read gets 502 Bad Gateway; one in a format it does not
// convert is sent as it is when the Accept header allows that type, and
// 406 Not Acceptable otherwise (RFC 7252 §10.2.2). A converted
// representation has its own entity tag (the CoAP ETag in hex followed by
// "-json"), since it is not the device's representation. An Accept or
// Content-Type naming application/coap-payload is refused (§6.2).
//
// # Responses (RFC 8075 §7)
//
// Status returns the HTTP status of each CoAP response code (Table 2).
// Max-Age becomes "Cache-Control: max-age=N" on 2.05 and 2.03 responses
// (60 when absent, RFC 7252 §5.10.5); on 5.03 and 4.29 it becomes
// Retry-After (RFC 8075 §7 note 8, RFC 8516). The CoAP ETag becomes a
// strong entity tag, its bytes in hex. If-None-Match entity tags in that
// form (quoted or bare hex, weak or strong) are sent as CoAP ETag options;
// a 2.03 Valid answer to them is 304 Not Modified, and so is a 2.05 whose
// entity tag the client already holds. A CoAP error response becomes a
// text/plain body that starts with "CoAP server returned" and the code,
// followed by the diagnostic payload if any (§6.5.3; §7 note 7 asks for
// that text in the reason phrase, which net/http cannot set); an error
// payload with a Content-Format other than text passes unchanged.
//
// A response served from the bridge's cache carries "X-Cache: HIT", one
// fetched from the device "X-Cache: MISS". A response served past its
// Max-Age (Response.Stale) carries "Cache-Control: max-age=0": its
// freshness lifetime is over, which is how RFC 9111 §4.2 marks a stale
// response now that the Warning header is obsolete (RFC 9111 §5.5).
//
// # Errors of the Forwarder
//
// ErrNotAllowed (no proxy rule allows the request) gets 403 Forbidden;
// ErrUnknownDevice 404 Not Found, since with the null mapping the device
// name is part of the bridge's own URI space and no CoAP server was asked;
// a message.Code error is mapped as a CoAP response with that code; a
// deadline (Handler.Timeout or the Forwarder's own) 504 Gateway Timeout;
// anything else 502 Bad Gateway (RFC 7252 §10.2). Every error response has
// a short text/plain body.
package httpcoap
