package httpcoap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// DefaultMaxBody is the request body limit when Handler.MaxBody is zero.
const DefaultMaxBody = 64 << 10

// defaultMaxAge is the Max-Age of a response without the option (RFC 7252
// §5.10.5).
const defaultMaxAge = 60

// Handler serves HTTP requests under Prefix (e.g. "/coap/") as CoAP
// requests through F. It is safe for concurrent use.
type Handler struct {
	// Prefix is the path the handler is mounted at; a missing trailing
	// slash is implied. Empty means "/".
	Prefix string
	// F runs the mapped requests.
	F Forwarder
	// MaxBody bounds a request body (413 beyond); 0 means DefaultMaxBody.
	MaxBody int64
	// Timeout bounds each Forward call (504 beyond); 0 leaves the bound to
	// the Forwarder's CoAP exchange (RFC 8075 §8.5) and the HTTP client.
	Timeout time.Duration
	// Log receives a line per failed request at Debug; nil discards.
	Log *slog.Logger
}

// ServeHTTP maps r to a CoAP request, forwards it and maps the response back.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, neg, herr := h.mapRequest(w, r)
	if herr != nil {
		if herr.allow != "" {
			w.Header().Set("Allow", herr.allow)
		}
		h.fail(w, r, herr.status, herr.msg, nil)
		return
	}
	ctx := r.Context()
	if h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.Timeout)
		defer cancel()
	}
	resp, err := h.F.Forward(ctx, req)
	if err != nil {
		h.forwardError(ctx, w, r, req, neg, err)
		return
	}
	if resp == nil {
		h.fail(w, r, http.StatusBadGateway, "no response from the bridge", nil)
		return
	}
	h.respond(w, r, neg, resp)
}

// negotiation is what the response mapping needs from the request.
type negotiation struct {
	accept accept
	choice choice
	cond   conditions
}

func (h *Handler) prefix() string {
	p := h.Prefix
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

func (h *Handler) mapRequest(w http.ResponseWriter, r *http.Request) (*Request, negotiation, *httpError) {
	var neg negotiation
	m, herr := method(r.Method)
	if herr != nil {
		return nil, neg, herr
	}
	req := &Request{Method: m}
	req.Device, req.Path, req.Query, herr = target(h.prefix(), r.URL.EscapedPath(), r.URL.RawQuery)
	if herr != nil {
		return nil, neg, herr
	}
	// The Request has no If-Match or request If-None-Match option: refuse
	// the precondition rather than drop it (RFC 7252 §10.2: 501 when the
	// proxy is unable to service the request).
	if r.Header.Get("If-Match") != "" {
		return nil, neg, errorf(http.StatusNotImplemented, "If-Match is not mapped to CoAP")
	}
	if m == message.GET {
		neg.cond = parseIfNoneMatch(r.Header.Values("If-None-Match"))
		req.ETags = neg.cond.etags()
	} else if r.Header.Get("If-None-Match") != "" {
		return nil, neg, errorf(http.StatusNotImplemented, "If-None-Match on %s is not mapped to CoAP", r.Method)
	}
	neg.accept = parseAccept(r.Header.Values("Accept"))
	if neg.accept.asksCoAPPayload() { // RFC 8075 §6.2
		return nil, neg, errorf(http.StatusNotAcceptable, "%s is not forwarded", coapPayload)
	}
	neg.choice = neg.accept.choose()
	req.Accept = neg.choice.format
	switch m {
	case message.POST, message.PUT:
		limit := h.MaxBody
		if limit <= 0 {
			limit = DefaultMaxBody
		}
		req.Payload, req.ContentFormat, herr = body(w, r, limit)
		if herr != nil {
			return nil, neg, herr
		}
	default:
		if r.ContentLength != 0 {
			return nil, neg, errorf(http.StatusBadRequest, "a %s request carries no body", r.Method)
		}
	}
	return req, neg, nil
}

// forwardError answers a failed Forward.
func (h *Handler) forwardError(ctx context.Context, w http.ResponseWriter, r *http.Request, req *Request, neg negotiation, err error) {
	var code message.Code
	switch {
	case errors.Is(err, ErrNotAllowed):
		h.fail(w, r, http.StatusForbidden, fmt.Sprintf("no proxy rule allows %s %s", r.Method, r.URL.Path), err)
	case errors.Is(err, ErrUnknownDevice):
		h.fail(w, r, http.StatusNotFound, fmt.Sprintf("unknown device %q", req.Device), err)
	case errors.As(err, &code) && code.IsResponse():
		h.respond(w, r, neg, &Response{Code: code, ContentFormat: -1})
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		h.fail(w, r, http.StatusGatewayTimeout, fmt.Sprintf("no answer from device %q in time", req.Device), err)
	case r.Context().Err() != nil:
		h.logger().Debug("http client gone", "device", req.Device, "path", r.URL.Path, "err", err)
	default:
		h.fail(w, r, http.StatusBadGateway, fmt.Sprintf("the CoAP request to device %q failed", req.Device), err)
	}
}

// respond writes the HTTP mapping of a CoAP response (RFC 8075 §7).
func (h *Handler) respond(w http.ResponseWriter, r *http.Request, neg negotiation, resp *Response) {
	hdr := w.Header()
	if resp.Cached {
		hdr.Set("X-Cache", "HIT")
	} else {
		hdr.Set("X-Cache", "MISS")
	}
	payload, cf := resp.Payload, resp.ContentFormat
	if !resp.Code.IsSuccess() || resp.Code == message.Continue {
		h.respondError(w, r, resp)
		return
	}
	conditional := len(neg.cond.tags) > 0
	status := Status(resp.Code, len(payload) > 0, conditional)
	cacheable := resp.Code == message.Content || resp.Code == message.Valid

	// Content transcoding to JSON (RFC 8075 §6.5).
	converted := false
	if neg.choice.json && len(payload) > 0 && cf != int(message.AppJSON) {
		p := rules.Payload{Data: payload, HasFormat: cf >= 0}
		if cf >= 0 {
			p.Format = message.MediaType(cf)
		}
		out, err := rules.ToJSON(p, time.Now())
		switch {
		case err == nil:
			payload, cf, converted = out, int(message.AppJSON), true
		case errors.Is(err, rules.ErrContentFormat) && neg.accept.acceptable(contentTypeOr(cf)):
			// Not convertible, but the client accepts the device's type.
		case errors.Is(err, rules.ErrContentFormat):
			h.fail(w, r, http.StatusNotAcceptable, fmt.Sprintf("the device answered %s, which has no JSON form", contentTypeOr(cf)), err)
			return
		default:
			h.fail(w, r, http.StatusBadGateway, fmt.Sprintf("the device's %s payload does not convert to JSON", contentTypeOr(cf)), err)
			return
		}
	}

	var tag string
	if resp.ETag != nil {
		tag = opaqueTag(resp.ETag, converted)
	}
	// A 2.03 answers the client's entity tags (note 3); a 2.05 whose tag
	// the client holds, or any 2.05 under If-None-Match: *, fails the
	// precondition (RFC 9110 §13.1.2).
	switch {
	case status == http.StatusNotModified:
		if t, ok := neg.cond.tagFor(resp.ETag); ok {
			tag = t
		}
	case resp.Code == message.Content && ((tag != "" && neg.cond.holds(tag)) || neg.cond.any):
		status = http.StatusNotModified
	}
	if tag != "" {
		hdr.Set("ETag", `"`+tag+`"`)
	}
	if cacheable {
		// RFC 7252 §10.2.2: max-age no greater than the remaining freshness.
		age := uint32(defaultMaxAge)
		if resp.MaxAge != nil {
			age = *resp.MaxAge
		}
		if resp.Stale {
			age = 0
		}
		hdr.Set("Cache-Control", "max-age="+strconv.FormatUint(uint64(age), 10))
	}
	hdr.Add("Vary", "Accept")
	if status == http.StatusNotModified || status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	hdr.Set("Content-Type", contentTypeOr(cf))
	h.write(w, r, status, payload)
}

// contentTypeOr is contentType with application/octet-stream for a payload
// without Content-Format, so net/http does not sniff one.
func contentTypeOr(cf int) string {
	if ct := contentType(cf); ct != "" {
		return ct
	}
	return "application/octet-stream"
}

// respondError maps a CoAP error response: its diagnostic payload goes in
// the body (RFC 8075 §6.5.3), after the CoAP code (§7 note 7 asks for
// "CoAP server returned 4.05" in the reason phrase, which net/http does not
// let a handler set). Max-Age of 5.03 and 4.29 is Retry-After (note 8).
func (h *Handler) respondError(w http.ResponseWriter, r *http.Request, resp *Response) {
	status := Status(resp.Code, len(resp.Payload) > 0, false)
	if resp.MaxAge != nil && (resp.Code == message.ServiceUnavailable || resp.Code == message.TooManyRequests) {
		w.Header().Set("Retry-After", strconv.FormatUint(uint64(*resp.MaxAge), 10))
	}
	if resp.ContentFormat >= 0 && resp.ContentFormat != int(message.TextPlain) && len(resp.Payload) > 0 {
		w.Header().Set("Content-Type", contentType(resp.ContentFormat))
		h.write(w, r, status, resp.Payload)
		return
	}
	msg := "CoAP server returned " + resp.Code.String()
	if len(resp.Payload) > 0 {
		msg += ": " + strings.ToValidUTF8(string(resp.Payload), "\uFFFD")
	}
	h.fail(w, r, status, msg, nil)
}

// fail writes a short text/plain error body.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
	h.logger().Debug("http-coap request failed", "method", r.Method, "path", r.URL.Path, "status", status, "reason", msg, "err", err)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.write(w, r, status, []byte(msg+"\n"))
}

// write sends the status and body; a HEAD response gets the headers only
// (RFC 7252 §10.2.3).
func (h *Handler) write(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := w.Write(body); err != nil {
		h.logger().Debug("http-coap response write failed", "path", r.URL.Path, "err", err)
	}
}

func (h *Handler) logger() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return discardLog
}

var discardLog = slog.New(slog.DiscardHandler)
