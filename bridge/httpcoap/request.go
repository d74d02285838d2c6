package httpcoap

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// Request is an HTTP request mapped to CoAP.
type Request struct {
	// Method is GET, POST, PUT or DELETE (HEAD is sent as GET).
	Method message.Code
	// Device is the first path segment after the Handler's prefix,
	// percent-decoded.
	Device string
	// Path holds the remaining segments, percent-decoded: the Uri-Path
	// values. Empty for the device's root resource.
	Path []string
	// Query holds the '&'-separated arguments of the URL query,
	// percent-decoded and in order: the Uri-Query values ("k=v" or "k").
	Query []string
	// Accept is the CoAP Accept option, nil for none.
	Accept *message.MediaType
	// ContentFormat is the Content-Format of Payload, nil when the request
	// had no Content-Type.
	ContentFormat *message.MediaType
	// Payload is the request body (POST and PUT), at most Handler.MaxBody
	// bytes.
	Payload []byte
	// ETags are the entity tags of If-None-Match, as CoAP ETag options
	// asking the device to validate them (RFC 7252 §5.10.6.2).
	ETags [][]byte
}

// Response is the CoAP response to a Request.
type Response struct {
	Code message.Code
	// ContentFormat is the Content-Format option, -1 for none.
	ContentFormat int
	Payload       []byte
	// MaxAge is the Max-Age option in seconds, nil when absent (then 60,
	// RFC 7252 §5.10.5). From the cache it is the remaining lifetime.
	MaxAge *uint32
	// ETag is the ETag option, nil when absent.
	ETag []byte
	// Stale reports a cached response served past its Max-Age.
	Stale bool
	// Cached reports a response served from the bridge's cache.
	Cached bool
}

// Forwarder runs mapped requests: the bridge's proxy rules, cache and CoAP
// client.
type Forwarder interface {
	// Forward runs the CoAP request through the bridge's proxy rules and
	// cache. It returns ErrNotAllowed when no rule allows the request,
	// ErrUnknownDevice for a device the bridge does not know, and stops
	// when ctx is done.
	Forward(ctx context.Context, req *Request) (*Response, error)
}

// httpError is a request the Handler answers itself.
type httpError struct {
	status int
	msg    string
	allow  string // Allow header of a 405
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// allowed is the Allow header of a 405 (RFC 9110 §15.5.6).
const allowed = "GET, HEAD, POST, PUT, DELETE"

// maxOptionLen is the longest Uri-Path or Uri-Query value (RFC 7252
// §5.10.1).
const maxOptionLen = 255

// method maps the HTTP method (RFC 7252 §10.2).
func method(m string) (message.Code, *httpError) {
	switch m {
	case http.MethodGet, http.MethodHead: // §10.2.3: HEAD is GET without the body
		return message.GET, nil
	case http.MethodPost:
		return message.POST, nil
	case http.MethodPut:
		return message.PUT, nil
	case http.MethodDelete:
		return message.DELETE, nil
	case http.MethodOptions, http.MethodTrace, http.MethodConnect: // §10.2.1, §10.2.7
		return 0, errorf(http.StatusNotImplemented, "%s is not supported by CoAP", m)
	}
	e := errorf(http.StatusMethodNotAllowed, "method %s is not mapped to CoAP", m)
	e.allow = allowed
	return 0, e
}

// target splits the escaped URL path under prefix into the device and the
// Uri-Path values, and the raw query into Uri-Query values (RFC 7252 §6.4,
// RFC 8075 §5.2).
func target(prefix, escapedPath, rawQuery string) (device string, path, query []string, herr *httpError) {
	rest, ok := strings.CutPrefix(escapedPath, prefix)
	if !ok {
		if escapedPath+"/" == prefix {
			return "", nil, nil, errorf(http.StatusBadRequest, "no device in the path")
		}
		return "", nil, nil, errorf(http.StatusNotFound, "%s is not under %s", escapedPath, prefix)
	}
	segs := strings.Split(rest, "/")
	if len(segs) == 2 && segs[1] == "" {
		segs = segs[:1] // "/coap/dev/": the root resource (RFC 7252 §6.4)
	}
	for i, s := range segs {
		v, herr := uriValue(s, "path segment")
		if herr != nil {
			return "", nil, nil, herr
		}
		if v == "" {
			if i == 0 {
				return "", nil, nil, errorf(http.StatusBadRequest, "no device in the path")
			}
			return "", nil, nil, errorf(http.StatusBadRequest, "empty path segment")
		}
		if v == "." || v == ".." {
			return "", nil, nil, errorf(http.StatusBadRequest, "path segment %q is not allowed", v)
		}
		if i == 0 {
			device = v
		} else {
			path = append(path, v)
		}
	}
	if rawQuery != "" {
		for arg := range strings.SplitSeq(rawQuery, "&") {
			if arg == "" {
				continue // "a&&b": no argument between the separators
			}
			v, herr := uriValue(arg, "query argument")
			if herr != nil {
				return "", nil, nil, herr
			}
			query = append(query, v)
		}
	}
	return device, path, query, nil
}

// uriValue percent-decodes one Uri-Path or Uri-Query value: a CoAP string
// option, UTF-8 of at most 255 bytes (RFC 7252 §3.2, §5.10.1).
func uriValue(s, what string) (string, *httpError) {
	v, err := url.PathUnescape(s)
	if err != nil {
		return "", errorf(http.StatusBadRequest, "%s %q: bad percent-encoding", what, s)
	}
	if !utf8.ValidString(v) {
		return "", errorf(http.StatusBadRequest, "%s %q is not UTF-8", what, s)
	}
	if len(v) > maxOptionLen {
		return "", errorf(http.StatusBadRequest, "%s longer than %d bytes", what, maxOptionLen)
	}
	return v, nil
}

// entityTag is one entity tag of If-None-Match.
type entityTag struct {
	opaque string // the tag between the quotes, W/ dropped (weak comparison, RFC 9110 §8.8.3.2)
	etag   []byte // the CoAP ETag it names
}

// conditions are the request's If-None-Match entity tags.
type conditions struct {
	tags []entityTag
	any  bool // If-None-Match: *
}

// parseIfNoneMatch reads If-None-Match. Tags in the form the bridge issues
// ("hex" or "hex-json", quoted or bare, weak or strong) name a CoAP ETag of
// 1 to 8 bytes (RFC 7252 §5.10.6); other tags cannot match a representation
// the bridge served and are not forwarded.
func parseIfNoneMatch(values []string) conditions {
	var c conditions
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			t = strings.TrimSpace(t)
			if t == "*" {
				c.any = true
				continue
			}
			t = strings.TrimPrefix(t, "W/")
			if len(t) >= 2 && t[0] == '"' && t[len(t)-1] == '"' {
				t = t[1 : len(t)-1]
			}
			b, err := hex.DecodeString(strings.TrimSuffix(t, jsonTagSuffix))
			if err != nil || len(b) == 0 || len(b) > 8 {
				continue
			}
			c.tags = append(c.tags, entityTag{opaque: t, etag: b})
		}
	}
	return c
}

// etags returns the CoAP ETag options, each once.
func (c conditions) etags() [][]byte {
	var out [][]byte
	for _, t := range c.tags {
		dup := false
		for _, o := range out {
			if string(o) == string(t.etag) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, t.etag)
		}
	}
	return out
}

// holds reports whether the client holds the representation with this
// opaque tag.
func (c conditions) holds(opaque string) bool {
	for _, t := range c.tags {
		if t.opaque == opaque {
			return true
		}
	}
	return false
}

// tagFor returns the client's tag that names etag, for the ETag header of
// a 304 answering a 2.03.
func (c conditions) tagFor(etag []byte) (string, bool) {
	for _, t := range c.tags {
		if string(t.etag) == string(etag) {
			return t.opaque, true
		}
	}
	return "", false
}

// jsonTagSuffix marks the entity tag of a representation converted to JSON.
const jsonTagSuffix = "-json"

// opaqueTag is the entity tag of a CoAP ETag: its bytes in hex, with
// jsonTagSuffix when the body was converted to JSON.
func opaqueTag(etag []byte, converted bool) string {
	s := hex.EncodeToString(etag)
	if converted {
		s += jsonTagSuffix
	}
	return s
}

// body reads a POST or PUT body, at most maxBody bytes, and maps its
// Content-Type (RFC 8075 §6.1, §6.4).
func body(w http.ResponseWriter, r *http.Request, maxBody int64) ([]byte, *message.MediaType, *httpError) {
	if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return nil, nil, errorf(http.StatusUnsupportedMediaType, "Content-Encoding %s has no Content-Format", enc)
	}
	var cf *message.MediaType
	if ct := r.Header.Get("Content-Type"); ct != "" {
		name, params, err := mime.ParseMediaType(ct)
		if err != nil {
			return nil, nil, errorf(http.StatusUnsupportedMediaType, "Content-Type %q does not parse", ct)
		}
		if name == coapPayload { // RFC 8075 §6.2: not forwarded unless configured
			return nil, nil, errorf(http.StatusUnsupportedMediaType, "%s is not forwarded", coapPayload)
		}
		mt, ok := contentFormat(name, params)
		if !ok {
			return nil, nil, errorf(http.StatusUnsupportedMediaType, "Content-Type %s has no CoAP Content-Format", name)
		}
		cf = &mt
	}
	if r.ContentLength > maxBody {
		return nil, nil, errorf(http.StatusRequestEntityTooLarge, "body larger than %d bytes", maxBody)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, nil, errorf(http.StatusRequestEntityTooLarge, "body larger than %d bytes", maxBody)
		}
		return nil, nil, errorf(http.StatusBadRequest, "reading the body: %v", err)
	}
	return b, cf, nil
}
