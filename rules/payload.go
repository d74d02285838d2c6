package rules

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// Limits on decoded CBOR, so a small hostile payload cannot expand into a
// large or deep value.
const (
	cborMaxDepth    = 32
	cborMaxElements = 65536
)

var cborDec = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:            cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:      cborMaxDepth,
		MaxArrayElements:     cborMaxElements,
		MaxMapPairs:          cborMaxElements,
		UnrecognizedTagToAny: cbor.UnrecognizedTagContentToAny,
		TimeTagToAny:         cbor.TimeTagToRFC3339Nano,
	}.DecMode()
	if err != nil {
		panic(err) // constant options
	}
	return m
}()

var cborEnc = func() cbor.EncMode {
	// RFC 8949 §4.2.1: preferred serialization, shortest exact floats.
	m, err := cbor.EncOptions{Sort: cbor.SortCoreDeterministic, ShortestFloat: cbor.ShortestFloat16}.EncMode()
	if err != nil {
		panic(err) // constant options
	}
	return m
}()

// Payload is a CoAP payload with its Content-Format option, if any.
type Payload struct {
	Data []byte
	// Format is meaningful only when HasFormat is true (RFC 7252 §5.10.3:
	// the option may be absent).
	Format    message.MediaType
	HasFormat bool
}

// ToJSON converts a CoAP payload to JSON by Content-Format:
//
//   - application/json passes through after validation;
//   - application/cbor becomes the equivalent JSON (RFC 8949 §6.1);
//   - SenML JSON and CBOR become an array of resolved records (RFC 8428
//     §4.6), relative times taken from now;
//   - text/plain that is a number becomes a JSON number, other text a JSON
//     string; link-format and XML become JSON strings;
//   - without a Content-Format, valid JSON passes and UTF-8 text is treated
//     as text/plain.
//
// Anything else fails with ErrContentFormat, and bytes that do not parse as
// their format fail with ErrConvert.
func ToJSON(p Payload, now time.Time) ([]byte, error) {
	if (p.HasFormat && p.Format == message.AppJSON) || (!p.HasFormat && json.Valid(p.Data)) {
		if !json.Valid(p.Data) {
			return nil, fmt.Errorf("%w: invalid JSON", ErrConvert)
		}
		return p.Data, nil
	}
	if !p.HasFormat || p.Format == message.TextPlain {
		return textToJSON(p.Data)
	}
	v, err := Decode(p, now)
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConvert, err)
	}
	return out, nil
}

// Decode returns the payload as a JSON-shaped Go value (maps with string
// keys, slices, numbers, strings, booleans, nil), converting as ToJSON does.
// Expressions see this value as payload.
func Decode(p Payload, now time.Time) (any, error) {
	if !p.HasFormat {
		if json.Valid(p.Data) {
			return decodeJSON(p.Data)
		}
		return decodeText(p.Data)
	}
	switch p.Format {
	case message.AppJSON:
		return decodeJSON(p.Data)
	case message.AppCBOR:
		var v any
		if err := cborDec.Unmarshal(p.Data, &v); err != nil {
			return nil, fmt.Errorf("%w: cbor: %v", ErrConvert, err)
		}
		return cborToJSON(v, 0)
	case message.AppSenMLJSON, message.AppSenMLCBOR:
		recs, err := ResolveSenML(p, now)
		if err != nil {
			return nil, err
		}
		out := make([]any, len(recs))
		for i, r := range recs {
			out[i] = r.toMap()
		}
		return out, nil
	case message.TextPlain:
		return decodeText(p.Data)
	case message.AppLinkFormat, message.AppXML:
		if !utf8.Valid(p.Data) {
			return nil, fmt.Errorf("%w: %s payload is not UTF-8", ErrConvert, p.Format.ShortName())
		}
		return string(p.Data), nil
	}
	return nil, fmt.Errorf("%w: %s", ErrContentFormat, p.Format.ShortName())
}

func decodeJSON(b []byte) (any, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%w: json: %v", ErrConvert, err)
	}
	return v, nil
}

// decodeText turns text/plain (RFC 7252 §12.3: UTF-8) into a number when it
// is one, a string otherwise.
func decodeText(b []byte) (any, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: text payload is not UTF-8", ErrConvert)
	}
	if f, ok := textNumber(string(b)); ok {
		return f, nil
	}
	return string(b), nil
}

func textNumber(s string) (float64, bool) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return f, err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
}

// textToJSON is decodeText for ToJSON: a number written as a JSON number
// keeps its exact digits ("21.50" stays 21.50).
func textToJSON(b []byte) ([]byte, error) {
	v, err := decodeText(b)
	if err != nil {
		return nil, err
	}
	if _, isNum := v.(float64); isNum {
		if lit := bytes.TrimSpace(b); json.Valid(lit) && (lit[0] == '-' || lit[0] >= '0' && lit[0] <= '9') {
			return lit, nil
		}
	}
	return json.Marshal(v)
}

// cborToJSON maps a decoded CBOR value onto JSON shapes, following RFC 8949
// §6.1: byte strings become base64url without padding, NaN and infinities
// become null, map keys become strings.
func cborToJSON(v any, depth int) (any, error) {
	if depth > cborMaxDepth {
		return nil, fmt.Errorf("%w: cbor nested too deeply", ErrConvert)
	}
	switch x := v.(type) {
	case nil, bool, string, uint64, int64:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, nil
		}
		return x, nil
	case float32:
		return cborToJSON(float64(x), depth)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := cborToJSON(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case big.Int:
		return json.Number(x.String()), nil
	case *big.Int:
		return json.Number(x.String()), nil
	case []byte:
		return base64.RawURLEncoding.EncodeToString(x), nil
	case cbor.ByteString:
		return base64.RawURLEncoding.EncodeToString([]byte(x)), nil
	case cbor.SimpleValue:
		return nil, nil
	case cbor.Tag:
		return cborToJSON(x.Content, depth+1)
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := cborToJSON(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			ks, err := cborKey(k)
			if err != nil {
				return nil, err
			}
			if _, dup := out[ks]; dup {
				return nil, fmt.Errorf("%w: cbor map keys collide as JSON key %q", ErrConvert, clip(ks))
			}
			c, err := cborToJSON(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[ks] = c
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: cbor value of type %T has no JSON form", ErrConvert, v)
}

func cborKey(k any) (string, error) {
	switch x := k.(type) {
	case string:
		return x, nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case bool:
		return strconv.FormatBool(x), nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case cbor.ByteString:
		return base64.RawURLEncoding.EncodeToString([]byte(x)), nil
	}
	return "", fmt.Errorf("%w: cbor map key of type %T has no JSON form", ErrConvert, k)
}

// JSONToCBOR re-encodes a JSON document as CBOR (RFC 8949 §6.2) for commands
// whose rule sets content_format = "cbor". Integers stay integers, as
// bignums (tags 2 and 3) beyond 64 bits; other numbers become floats, and a
// number beyond the float64 range fails with ErrConvert rather than turning
// into an infinity.
func JSONToCBOR(b []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: json: %v", ErrConvert, err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: json: data after the value", ErrConvert)
	}
	cv, err := jsonToCBORValue(v)
	if err != nil {
		return nil, err
	}
	out, err := cborEnc.Marshal(cv)
	if err != nil {
		return nil, fmt.Errorf("%w: cbor: %v", ErrConvert, err)
	}
	return out, nil
}

func jsonToCBORValue(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		return jsonNumberToCBOR(x)
	case []any:
		for i := range x {
			c, err := jsonToCBORValue(x[i])
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
		return x, nil
	case map[string]any:
		for k := range x {
			c, err := jsonToCBORValue(x[k])
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
		return x, nil
	}
	return v, nil
}

// jsonNumberToCBOR maps a JSON number onto the CBOR number that holds it
// exactly: an integer (major type 0 or 1, or a bignum, RFC 8949 §3.4.3), or
// a float.
func jsonNumberToCBOR(n json.Number) (any, error) {
	s := string(n)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, nil
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return u, nil
	}
	if !strings.ContainsAny(s, ".eE") {
		if bi, ok := new(big.Int).SetString(s, 10); ok {
			return bi, nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: json: number %s is out of range", ErrConvert, clip(s))
	}
	return f, nil
}
