package message

import (
	"slices"
	"strconv"
	"strings"
)

// MediaType is a Content-Format identifier (RFC 7252 §12.3, IANA "CoAP
// Content-Formats" registry).
type MediaType uint16

// Registered Content-Formats.
const (
	TextPlain       MediaType = 0   // text/plain;charset=utf-8
	AppCoseEncrypt0 MediaType = 16  // application/cose; cose-type="cose-encrypt0"
	AppLinkFormat   MediaType = 40  // application/link-format, RFC 6690
	AppXML          MediaType = 41  // application/xml
	AppOctets       MediaType = 42  // application/octet-stream
	AppEXI          MediaType = 47  // application/exi
	AppJSON         MediaType = 50  // application/json
	AppJSONPatch    MediaType = 51  // application/json-patch+json
	AppMergePatch   MediaType = 52  // application/merge-patch+json
	AppCBOR         MediaType = 60  // application/cbor
	AppCWT          MediaType = 61  // application/cwt
	AppSenMLJSON    MediaType = 110 // application/senml+json, RFC 8428
	AppSenSMLJSON   MediaType = 111 // application/sensml+json
	AppSenMLCBOR    MediaType = 112 // application/senml+cbor
	AppSenSMLCBOR   MediaType = 113 // application/sensml+cbor
	AppSenMLEXI     MediaType = 114 // application/senml-exi
	AppSenMLXML     MediaType = 310 // application/senml+xml
)

var mediaTypeNames = map[MediaType]string{
	TextPlain:       "text/plain;charset=utf-8",
	AppCoseEncrypt0: "application/cose; cose-type=\"cose-encrypt0\"",
	AppLinkFormat:   "application/link-format",
	AppXML:          "application/xml",
	AppOctets:       "application/octet-stream",
	AppEXI:          "application/exi",
	AppJSON:         "application/json",
	AppJSONPatch:    "application/json-patch+json",
	AppMergePatch:   "application/merge-patch+json",
	AppCBOR:         "application/cbor",
	AppCWT:          "application/cwt",
	AppSenMLJSON:    "application/senml+json",
	AppSenSMLJSON:   "application/sensml+json",
	AppSenMLCBOR:    "application/senml+cbor",
	AppSenSMLCBOR:   "application/sensml+cbor",
	AppSenMLEXI:     "application/senml-exi",
	AppSenMLXML:     "application/senml+xml",
}

var mediaTypeByName = func() map[string]MediaType {
	m := make(map[string]MediaType, len(mediaTypeNames)+2)
	for k, v := range mediaTypeNames {
		m[v] = k
	}
	m["text/plain"] = TextPlain
	return m
}()

// String returns the media type name, or the number for unregistered formats.
func (mt MediaType) String() string {
	if s, ok := mediaTypeNames[mt]; ok {
		return s
	}
	return strconv.Itoa(int(mt))
}

// Known reports whether mt is in the built-in registry.
func (mt MediaType) Known() bool { _, ok := mediaTypeNames[mt]; return ok }

// ParseMediaType accepts a registered name ("application/json") or a decimal
// Content-Format number ("50").
func ParseMediaType(s string) (MediaType, bool) {
	if mt, ok := mediaTypeByName[s]; ok {
		return mt, true
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, false
	}
	return MediaType(n), true
}

// shortNames are the names rule files and the command line use for the
// common Content-Formats; ShortName prints them.
var shortNames = map[MediaType]string{
	TextPlain:     "text",
	AppLinkFormat: "link-format",
	AppXML:        "xml",
	AppOctets:     "octet-stream",
	AppEXI:        "exi",
	AppJSON:       "json",
	AppCBOR:       "cbor",
	AppSenMLJSON:  "senml+json",
	AppSenMLCBOR:  "senml+cbor",
}

// contentFormatByName maps every name ParseContentFormat accepts, lower
// case: the short names, their aliases and the registered names.
var contentFormatByName = func() map[string]MediaType {
	m := map[string]MediaType{
		"text/plain":    TextPlain,
		"link":          AppLinkFormat,
		"octets":        AppOctets,
		"binary":        AppOctets,
		"json-patch":    AppJSONPatch,
		"merge-patch":   AppMergePatch,
		"cwt":           AppCWT,
		"senml":         AppSenMLJSON,
		"sensml+json":   AppSenSMLJSON,
		"sensml+cbor":   AppSenSMLCBOR,
		"senml-exi":     AppSenMLEXI,
		"senml+xml":     AppSenMLXML,
		"cose-encrypt0": AppCoseEncrypt0,
	}
	for mt, n := range shortNames {
		m[n] = mt
	}
	for mt, n := range mediaTypeNames {
		m[n] = mt
	}
	return m
}()

// ParseContentFormat reads a Content-Format as a person writes it, in a
// rule file or on the command line: a short name ("json", "cbor",
// "senml+json", "text", ...; see ContentFormatNames), a registered name
// ("application/json", "text/plain"), either in any case, or a number
// 0-65535. MQTT content types go through the stricter ParseMediaType.
func ParseContentFormat(s string) (MediaType, bool) {
	name := strings.ToLower(strings.TrimSpace(s))
	if mt, ok := contentFormatByName[name]; ok {
		return mt, true
	}
	if mt, ok := contentFormatByName[strings.TrimPrefix(name, "application/")]; ok {
		return mt, true
	}
	if n, err := strconv.ParseUint(name, 10, 16); err == nil {
		return MediaType(n), true
	}
	return 0, false
}

// ContentFormatNames lists, sorted, the short names ParseContentFormat
// accepts besides registered names and numbers.
func ContentFormatNames() []string {
	var names []string
	for n := range contentFormatByName {
		if !strings.Contains(n, "/") && !strings.Contains(n, " ") {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// ShortName returns the short name of a common Content-Format ("json",
// "cbor", "senml+json", ...) or, for any other, its number.
func (mt MediaType) ShortName() string {
	if n, ok := shortNames[mt]; ok {
		return n
	}
	return strconv.Itoa(int(mt))
}
