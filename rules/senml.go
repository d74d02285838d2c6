package rules

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// SenML labels by CBOR label number (RFC 8428 §6, Table 6).
var senmlCBORLabels = map[int64]string{
	-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs",
	0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd",
}

// senmlVersion is the highest Base Version this code understands (RFC 8428
// §4.4: 10).
const senmlVersion = 10

// senmlRelative is 2**28: smaller times are relative to now (RFC 8428 §4.5.3).
const senmlRelative = 1 << 28

// SenMLRecord is one resolved SenML record (RFC 8428 §4.6): base name, base
// time, base unit, base value and base sum are applied and the time is
// absolute.
type SenMLRecord struct {
	Name string
	Unit string
	// Exactly one of the value fields is set, unless only Sum is.
	Value       *float64
	StringValue *string
	BoolValue   *bool
	DataValue   []byte
	Sum         *float64
	// Time is seconds since the Unix epoch.
	Time       float64
	UpdateTime *float64
	// Extra holds labels this code does not know (RFC 8428 §4.4 allows
	// them unless they end in '_').
	Extra map[string]any
}

func (r SenMLRecord) toMap() map[string]any {
	m := make(map[string]any, 4+len(r.Extra))
	for k, v := range r.Extra {
		m[k] = v
	}
	m["n"] = r.Name
	if r.Unit != "" {
		m["u"] = r.Unit
	}
	switch {
	case r.Value != nil:
		m["v"] = *r.Value
	case r.StringValue != nil:
		m["vs"] = *r.StringValue
	case r.BoolValue != nil:
		m["vb"] = *r.BoolValue
	case r.DataValue != nil:
		m["vd"] = base64.RawURLEncoding.EncodeToString(r.DataValue)
	}
	if r.Sum != nil {
		m["s"] = *r.Sum
	}
	m["t"] = r.Time
	if r.UpdateTime != nil {
		m["ut"] = *r.UpdateTime
	}
	return m
}

// ResolveSenML parses a SenML JSON (110) or CBOR (112) pack and resolves its
// records. Relative times are taken from now.
func ResolveSenML(p Payload, now time.Time) ([]SenMLRecord, error) {
	var raw []map[string]any
	switch p.Format {
	case message.AppSenMLJSON:
		var pack []map[string]any
		if err := json.Unmarshal(p.Data, &pack); err != nil {
			return nil, fmt.Errorf("%w: senml+json: %v", ErrConvert, err)
		}
		raw = pack
	case message.AppSenMLCBOR:
		var pack []map[any]any
		if err := cborDec.Unmarshal(p.Data, &pack); err != nil {
			return nil, fmt.Errorf("%w: senml+cbor: %v", ErrConvert, err)
		}
		raw = make([]map[string]any, len(pack))
		for i, rec := range pack {
			m := make(map[string]any, len(rec))
			for k, v := range rec {
				var label string
				switch x := k.(type) {
				case int64:
					label = senmlCBORLabels[x]
				case uint64:
					if x <= 8 {
						label = senmlCBORLabels[int64(x)]
					}
				case string:
					label = x
				}
				if label == "" {
					return nil, fmt.Errorf("%w: senml+cbor record %d: unknown label %v", ErrConvert, i, k)
				}
				if _, dup := m[label]; dup {
					return nil, fmt.Errorf("%w: senml+cbor record %d: label %q twice", ErrConvert, i, label)
				}
				m[label] = v
			}
			raw[i] = m
		}
	default:
		return nil, fmt.Errorf("%w: %s is not SenML", ErrContentFormat, p.Format.ShortName())
	}
	return resolve(raw, p.Format == message.AppSenMLCBOR, now)
}

// senmlBase carries base fields from record to record (RFC 8428 §4.1).
type senmlBase struct {
	name, unit     string
	time, val, sum float64
	version        int64
	versionSet     bool
}

func resolve(pack []map[string]any, isCBOR bool, now time.Time) ([]SenMLRecord, error) {
	nowSec := float64(now.UnixNano()) / 1e9
	var b senmlBase
	out := make([]SenMLRecord, 0, len(pack))
	for i, rec := range pack {
		r, err := resolveRecord(rec, &b, isCBOR, nowSec)
		if err != nil {
			return nil, fmt.Errorf("%w: senml record %d: %v", ErrConvert, i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func resolveRecord(rec map[string]any, b *senmlBase, isCBOR bool, nowSec float64) (SenMLRecord, error) {
	var r SenMLRecord
	var name string
	var t float64
	values := 0
	for label, v := range rec {
		var err error
		switch label {
		case "bver":
			var f float64
			if f, err = senmlNumber(label, v); err == nil {
				ver := int64(f)
				switch {
				case float64(ver) != f || ver < 1:
					err = fmt.Errorf("bver %v is not a version", f)
				case ver > senmlVersion:
					err = fmt.Errorf("bver %d is newer than %d", ver, senmlVersion)
				case b.versionSet && ver != b.version:
					// RFC 8428 §4.4: one version per pack.
					err = fmt.Errorf("bver %d differs from earlier %d", ver, b.version)
				}
				b.version, b.versionSet = ver, true
			}
		case "bn":
			b.name, err = senmlString(label, v)
		case "bu":
			b.unit, err = senmlString(label, v)
		case "bt":
			b.time, err = senmlNumber(label, v)
		case "bv":
			b.val, err = senmlNumber(label, v)
		case "bs":
			b.sum, err = senmlNumber(label, v)
		case "n":
			name, err = senmlString(label, v)
		case "u":
			r.Unit, err = senmlString(label, v)
		case "t":
			t, err = senmlNumber(label, v)
		case "ut":
			var f float64
			f, err = senmlNumber(label, v)
			r.UpdateTime = &f
		case "v":
			var f float64
			f, err = senmlNumber(label, v)
			r.Value = &f
			values++
		case "s":
			var f float64
			f, err = senmlNumber(label, v)
			r.Sum = &f
		case "vs":
			var s string
			s, err = senmlString(label, v)
			r.StringValue = &s
			values++
		case "vb":
			bv, ok := v.(bool)
			if !ok {
				err = fmt.Errorf("vb is %T, not a boolean", v)
			}
			r.BoolValue = &bv
			values++
		case "vd":
			r.DataValue, err = senmlData(v, isCBOR)
			values++
		default:
			// RFC 8428 §4.4: labels ending in '_' must be understood.
			if strings.HasSuffix(label, "_") {
				err = fmt.Errorf("label %q must be understood", clip(label))
			} else {
				if r.Extra == nil {
					r.Extra = map[string]any{}
				}
				r.Extra[label], err = cborToJSON(v, 0)
			}
		}
		if err != nil {
			return r, err
		}
	}
	// RFC 8428 §4.6: apply the base fields.
	r.Name = b.name + name
	if err := checkSenMLName(r.Name); err != nil {
		return r, err
	}
	if r.Unit == "" {
		r.Unit = b.unit
	}
	if values > 1 {
		return r, fmt.Errorf("record has %d value fields", values)
	}
	if values == 0 && r.Sum == nil {
		return r, fmt.Errorf("record has no value and no sum")
	}
	if r.Value != nil {
		*r.Value += b.val
	}
	if r.Sum != nil {
		*r.Sum += b.sum
	}
	r.Time = b.time + t
	// RFC 8428 §4.5.3: times below 2**28 are relative to now.
	if r.Time < senmlRelative {
		r.Time += nowSec
	}
	return r, nil
}

// checkSenMLName enforces RFC 8428 §4.5.1 on a resolved name.
func checkSenMLName(n string) error {
	if n == "" {
		return fmt.Errorf("record has no name")
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("-:./_", rune(c))) {
			return fmt.Errorf("bad name %q", clip(n))
		}
	}
	return nil
}

func senmlString(label string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s is %T, not a string", label, v)
	}
	return s, nil
}

func senmlNumber(label string, v any) (float64, error) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case float32:
		f = float64(x)
	case int64:
		f = float64(x)
	case uint64:
		f = float64(x)
	default:
		return 0, fmt.Errorf("%s is %T, not a number", label, v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%s is not finite", label)
	}
	return f, nil
}

// senmlData reads vd: base64url text in JSON, a byte string in CBOR
// (RFC 8428 §5, §6).
func senmlData(v any, isCBOR bool) ([]byte, error) {
	if isCBOR {
		b, ok := v.([]byte)
		if !ok {
			return nil, fmt.Errorf("vd is %T, not a byte string", v)
		}
		return b, nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("vd is %T, not a string", v)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("vd is not base64url")
	}
	return b, nil
}
