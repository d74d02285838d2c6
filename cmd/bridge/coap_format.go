package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/rules"
)

// parseContentFormat resolves a -t/--accept value as rule files read
// content_format: a short name, a registered name or a decimal
// Content-Format number (message.ParseContentFormat).
func parseContentFormat(s string) (message.MediaType, error) {
	if mt, ok := message.ParseContentFormat(s); ok {
		return mt, nil
	}
	return 0, fmt.Errorf("unknown content format %q (want a number or one of %s)", s, strings.Join(message.ContentFormatNames(), ", "))
}

// mediaTypeLabel names a Content-Format for display: "application/json (50)".
func mediaTypeLabel(mt message.MediaType) string {
	if mt.Known() {
		return fmt.Sprintf("%s (%d)", mt.String(), uint16(mt))
	}
	return strconv.Itoa(int(mt))
}

// writePayload prints a response payload for a person: JSON pretty-printed,
// CBOR and SenML decoded to JSON, text as it is, other bytes as a hex dump.
// With raw the bytes are written unchanged.
func writePayload(w io.Writer, opts message.Options, payload []byte, raw bool) error {
	if raw {
		_, err := w.Write(payload)
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	mt, has := opts.ContentFormat()
	out, err := displayPayload(mt, has, payload)
	if err != nil {
		return err
	}
	if !bytes.HasSuffix(out, []byte("\n")) {
		out = append(out, '\n')
	}
	_, err = w.Write(out)
	return err
}

// displayPayload renders payload by its Content-Format for a terminal.
// A payload that does not parse as its declared format is shown as text or
// hex with a note rather than failing, since the tool is for debugging.
func displayPayload(mt message.MediaType, has bool, payload []byte) ([]byte, error) {
	if has {
		switch mt {
		case message.AppJSON, message.AppSenMLJSON, message.AppSenSMLJSON,
			message.AppCBOR, message.AppSenMLCBOR, message.AppSenSMLCBOR,
			message.AppJSONPatch, message.AppMergePatch:
			js, err := rules.ToJSON(rules.Payload{Data: payload, Format: mt, HasFormat: true}, time.Now())
			if err != nil {
				// Formats ToJSON does not know but that are JSON text.
				if json.Valid(payload) {
					js = payload
				} else {
					return append([]byte(fmt.Sprintf("(payload is not valid %s: %v)\n", mt, err)), textOrHex(payload)...), nil
				}
			}
			var buf bytes.Buffer
			if err := json.Indent(&buf, js, "", "  "); err != nil {
				return js, nil
			}
			return buf.Bytes(), nil
		case message.TextPlain, message.AppLinkFormat, message.AppXML:
			return textOrHex(payload), nil
		}
		return hexDump(payload), nil
	}
	if json.Valid(payload) {
		var buf bytes.Buffer
		if err := json.Indent(&buf, payload, "", "  "); err == nil {
			return buf.Bytes(), nil
		}
	}
	return textOrHex(payload), nil
}

// textOrHex returns printable UTF-8 as it is and anything else as a hex dump.
func textOrHex(p []byte) []byte {
	if utf8.Valid(p) && !bytes.ContainsFunc(p, isControl) {
		return p
	}
	return hexDump(p)
}

func isControl(r rune) bool {
	return r < 0x20 && r != '\n' && r != '\r' && r != '\t' || r == 0x7f
}

func hexDump(p []byte) []byte { return []byte(hex.Dump(p)) }

// formatOption renders one option value by its registered format
// (RFC 7252 §3.2): numbers as numbers, strings quoted, opaque values in hex.
func formatOption(o message.Option) string {
	switch o.ID {
	case message.ContentFormat, message.Accept:
		if v, err := o.Uint(); err == nil {
			return mediaTypeLabel(message.MediaType(v))
		}
	case message.Block1, message.Block2:
		// RFC 7959 §2.2: NUM (4..20 bits) | M (1 bit) | SZX (3 bits)
		if v, err := o.Uint(); err == nil {
			more := ""
			if v&0x08 != 0 {
				more = "/more"
			}
			return fmt.Sprintf("num=%d%s size=%d", v>>4, more, 1<<((v&0x07)+4))
		}
	}
	def, known := o.ID.Def()
	if !known {
		return "0x" + hex.EncodeToString(o.Value)
	}
	switch def.Format {
	case message.FormatEmpty:
		return "(empty)"
	case message.FormatUint:
		if v, err := o.Uint(); err == nil {
			return strconv.FormatUint(uint64(v), 10)
		}
	case message.FormatString:
		return strconv.Quote(string(o.Value))
	}
	if len(o.Value) == 0 {
		return "(empty)"
	}
	return "0x" + hex.EncodeToString(o.Value)
}

// optionName names an option: its registered name or "Option 65000".
func optionName(id message.OptionID) string {
	if def, ok := id.Def(); ok && def.Name != "" {
		return def.Name
	}
	return fmt.Sprintf("Option %d", uint16(id))
}

// messageSummary is what -v shows of one message.
type messageSummary struct {
	Dir       string // ">" for a request sent, "<" for a response
	Type      message.Type
	Code      message.Code
	MessageID uint16
	Token     []byte
	Options   message.Options
	Payload   int
	Peer      string
}

// writeMessage prints a message header line and one line per option:
//
//	< ACK 2.05 Content MID=0x1a2b token=0x0102 from 127.0.0.1:5683
//	    Content-Format: application/json (50)
//	    Max-Age: 60
//	    payload: 17 bytes
func writeMessage(w io.Writer, m messageSummary) {
	tok := "(none)"
	if len(m.Token) > 0 {
		tok = "0x" + hex.EncodeToString(m.Token)
	}
	peer := ""
	if m.Peer != "" {
		if m.Dir == ">" {
			peer = " to " + m.Peer
		} else {
			peer = " from " + m.Peer
		}
	}
	fmt.Fprintf(w, "%s %s %s %s MID=%d token=%s%s\n", m.Dir, m.Type, m.Code.Dotted(), codeText(m.Code), m.MessageID, tok, peer)
	for _, o := range m.Options {
		fmt.Fprintf(w, "    %s: %s\n", optionName(o.ID), formatOption(o))
	}
	fmt.Fprintf(w, "    payload: %d bytes\n", m.Payload)
}

// codeText is the name of a code without its dotted number ("Content").
func codeText(c message.Code) string {
	s := c.String()
	if d := c.Dotted(); strings.HasPrefix(s, d) {
		s = strings.TrimSpace(strings.TrimPrefix(s, d))
	}
	return s
}
