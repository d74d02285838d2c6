package httpcoap

import (
	"mime"
	"strconv"
	"strings"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// coapPayload is the media type RFC 8075 §6.2 defines for a Content-Format
// the proxy does not recognise: "application/coap-payload;cf=N".
const coapPayload = "application/coap-payload"

// jsonType is the media type the Handler converts payloads to.
const jsonType = "application/json"

// contentFormat maps an HTTP media type (already split by mime.ParseMediaType,
// so name is lower case) to a CoAP Content-Format: the registry lookup of
// RFC 8075 §6.4, exact names only (no loose mapping, §6.3). text/plain maps
// to Content-Format 0 only in UTF-8 or its ASCII subset (RFC 7252 §12.3).
func contentFormat(name string, params map[string]string) (message.MediaType, bool) {
	if !strings.Contains(name, "/") {
		return 0, false
	}
	if name == "text/plain" {
		cs, ok := params["charset"]
		if ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "us-ascii") {
			return 0, false
		}
		return message.TextPlain, true
	}
	return message.ParseMediaType(name)
}

// contentType returns the HTTP Content-Type of a CoAP Content-Format, or ""
// for none (cf < 0). A number the registry does not know is
// application/coap-payload with its number (RFC 8075 §6.2).
func contentType(cf int) string {
	if cf < 0 {
		return ""
	}
	if mt := message.MediaType(cf); cf <= 0xffff && mt.Known() {
		return mt.String()
	}
	return coapPayload + ";cf=" + strconv.Itoa(cf)
}

// mediaRange is one element of an Accept header (RFC 9110 §12.5.1).
type mediaRange struct {
	name   string // lower case "type/subtype", "type/*" or "*/*"
	params map[string]string
	q      float64
}

func (m mediaRange) wildcard() bool { return strings.HasSuffix(m.name, "/*") }

// matches reports whether the range covers the media type name and how
// specifically: 3 exact, 2 type/*, 1 */*, 0 not at all.
func (m mediaRange) matches(name string) int {
	switch {
	case m.name == name:
		return 3
	case m.name == "*/*":
		return 1
	case m.wildcard() && strings.HasPrefix(name, strings.TrimSuffix(m.name, "*")):
		return 2
	}
	return 0
}

// accept is a parsed Accept header.
type accept struct {
	ranges []mediaRange // in header order; nil when the header is absent
}

// parseAccept reads the Accept header values. Elements that do not parse or
// carry a malformed q are skipped, as if the client had not sent them.
func parseAccept(values []string) accept {
	var a accept
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			elem = strings.TrimSpace(elem)
			if elem == "" {
				continue
			}
			if elem == "*" { // a common shorthand for */*
				elem = "*/*"
			}
			name, params, err := mime.ParseMediaType(elem)
			if err != nil {
				continue
			}
			q := 1.0
			if s, ok := params["q"]; ok {
				f, err := strconv.ParseFloat(s, 64)
				if err != nil || f < 0 || f > 1 {
					continue
				}
				q = f
			}
			a.ranges = append(a.ranges, mediaRange{name: name, params: params, q: q})
		}
	}
	return a
}

// asksCoAPPayload reports whether the header names application/coap-payload,
// which the bridge does not forward (RFC 8075 §6.2).
func (a accept) asksCoAPPayload() bool {
	for _, r := range a.ranges {
		if r.name == coapPayload && r.q > 0 {
			return true
		}
	}
	return false
}

// choice is what the bridge does about an Accept header.
type choice struct {
	format *message.MediaType // sent as the CoAP Accept option
	json   bool               // convert a successful response to JSON
}

// choose picks the most preferred media range the bridge can serve (highest
// q, earlier first on ties): a wildcard means no CoAP Accept option (RFC 8075
// §6.1), application/json means conversion (§6.5), a media type with a
// Content-Format means that CoAP Accept option (RFC 7252 §10.2.2). Media
// types with no Content-Format are skipped (§6.1: silently ignored).
func (a accept) choose() choice {
	best := -1
	for i, r := range a.ranges {
		if r.q <= 0 || (best >= 0 && r.q <= a.ranges[best].q) {
			continue
		}
		if r.wildcard() || r.name == jsonType {
			best = i
			continue
		}
		if _, ok := contentFormat(r.name, r.params); ok {
			best = i
		}
	}
	if best < 0 {
		return choice{}
	}
	r := a.ranges[best]
	switch {
	case r.wildcard():
		return choice{}
	case r.name == jsonType:
		return choice{json: true}
	}
	mt, _ := contentFormat(r.name, r.params)
	return choice{format: &mt}
}

// acceptable reports whether the header allows a response of the given
// Content-Type: the most specific range that matches decides (RFC 9110
// §12.5.1), and no header allows everything.
func (a accept) acceptable(ctype string) bool {
	if a.ranges == nil {
		return true
	}
	name, _, err := mime.ParseMediaType(ctype)
	if err != nil {
		return false
	}
	spec, q := 0, 0.0
	for _, r := range a.ranges {
		if s := r.matches(name); s > spec {
			spec, q = s, r.q
		}
	}
	return spec > 0 && q > 0
}
