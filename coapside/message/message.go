package message

import (
	"strconv"
	"strings"
)

// Type is the 2-bit message type (RFC 7252 §3, §4).
type Type uint8

// Message types.
const (
	Confirmable     Type = 0 // CON
	NonConfirmable  Type = 1 // NON
	Acknowledgement Type = 2 // ACK
	Reset           Type = 3 // RST
)

// String returns "CON", "NON", "ACK" or "RST".
func (t Type) String() string {
	switch t {
	case Confirmable:
		return "CON"
	case NonConfirmable:
		return "NON"
	case Acknowledgement:
		return "ACK"
	case Reset:
		return "RST"
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// MaxTokenLength is the largest token length (RFC 7252 §3).
const MaxTokenLength = 8

// Message is one CoAP message. After Unmarshal, Token, option values and
// Payload alias the decoded buffer.
type Message struct {
	Type      Type
	Code      Code
	MessageID uint16
	Token     []byte
	Options   Options
	Payload   []byte

	// store backs Options for typical messages so decoding does not allocate.
	store [8]Option
}

// IsEmpty reports whether m is an Empty message (code 0.00, RFC 7252 §4.1).
func (m *Message) IsEmpty() bool { return m.Code == Empty }

// Reset clears the message for reuse, keeping the options' capacity.
func (m *Message) Reset() {
	opts := m.Options[:0]
	clear(m.Options)
	*m = Message{Options: opts, store: m.store}
	if cap(opts) == 0 {
		m.Options = nil
	}
}

// Clone returns a deep copy that does not alias any buffer of m.
func (m *Message) Clone() *Message {
	c := &Message{
		Type:      m.Type,
		Code:      m.Code,
		MessageID: m.MessageID,
	}
	if m.Token != nil {
		c.Token = append([]byte(nil), m.Token...)
	}
	if len(m.Options) > 0 {
		c.Options = m.Options.Clone()
	}
	if m.Payload != nil {
		c.Payload = append([]byte(nil), m.Payload...)
	}
	return c
}

// Path returns the Uri-Path as "/a/b".
func (m *Message) Path() string { return m.Options.Path() }

// String formats the message for logs, e.g. "CON GET mid=1 token=ab01 /a/b [3 opts] 4B".
func (m *Message) String() string {
	var b strings.Builder
	b.WriteString(m.Type.String())
	b.WriteByte(' ')
	b.WriteString(m.Code.String())
	b.WriteString(" mid=")
	b.WriteString(strconv.Itoa(int(m.MessageID)))
	if len(m.Token) > 0 {
		b.WriteString(" token=")
		const hex = "0123456789abcdef"
		for _, c := range m.Token {
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	if m.Options.Has(URIPath) {
		b.WriteByte(' ')
		b.WriteString(m.Options.Path())
	}
	if len(m.Options) > 0 {
		b.WriteString(" [")
		b.WriteString(strconv.Itoa(len(m.Options)))
		b.WriteString(" opts]")
	}
	if len(m.Payload) > 0 {
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(len(m.Payload)))
		b.WriteByte('B')
	}
	return b.String()
}
