// Package rules loads the bridge's TOML rule files and answers the questions
// the bridge asks while running: which rule handles this CoAP path or MQTT
// topic, with which captures; what topic, path or URL a rule renders; how a
// payload converts; whether a where expression keeps a message; and, on
// reload, what changed.
//
// Loading (LoadFiles, Parse) reports every problem in every file as
// "file:line: message" (Errors). Files are capped at MaxFileSize (4 MiB) and
// parsed with go-toml's position-aware parser; nothing here does network I/O.
//
// Patterns use {name} for one path segment or topic level and {name...} for
// the rest (last only; '#' in an MQTT filter). Rendering checks every
// captured value so it cannot leave its segment (ErrEscape).
//
// The CoAP and key vocabulary is not written here: methods and
// Content-Formats are coapside/message's Code and MediaType, coap URIs and
// default ports coapside/uri's, key syntax, SPKI pins and the Secret type
// package keys's. rules imports those pure leaves and nothing else of the
// module (TestImportBoundary), never the CoAP stack, DTLS or MQTT.
//
// A loaded Set is immutable and safe for concurrent use.
package rules
