package message

import "strconv"

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
