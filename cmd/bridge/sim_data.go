package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/fxamacker/cbor/v2"
)

// simFormat is how a simulated device encodes its sensor readings.
type simFormat string

// Sensor payload formats of "bridge sim --format".
const (
	simText  simFormat = "text"  // text/plain: "21.53"
	simJSON  simFormat = "json"  // application/json: {"value":21.53,"unit":"Cel"}
	simCBOR  simFormat = "cbor"  // application/cbor: the same map in CBOR
	simSenML simFormat = "senml" // application/senml+json (RFC 8428)
)

func parseSimFormat(s string) (simFormat, error) {
	switch f := simFormat(strings.ToLower(s)); f {
	case simText, simJSON, simCBOR, simSenML:
		return f, nil
	}
	return "", fmt.Errorf("unknown format %q: want text, json, cbor or senml", s)
}

// mediaType is the Content-Format of the format.
func (f simFormat) mediaType() message.MediaType {
	switch f {
	case simJSON:
		return message.AppJSON
	case simCBOR:
		return message.AppCBOR
	case simSenML:
		return message.AppSenMLJSON
	}
	return message.TextPlain
}

// encode renders one reading of device dev's quantity name in unit.
func (f simFormat) encode(dev, name, unit string, v float64) []byte {
	switch f {
	case simJSON:
		b, _ := json.Marshal(map[string]any{"value": v, "unit": unit})
		return b
	case simCBOR:
		b, _ := cbor.Marshal(map[string]any{"value": v, "unit": unit})
		return b
	case simSenML:
		// RFC 8428 §4: base name + name identify the sensor; u is the unit.
		b, _ := json.Marshal([]map[string]any{{"bn": "urn:dev:" + dev + ":", "n": name, "u": unit, "v": v}})
		return b
	}
	return []byte(strconv.FormatFloat(v, 'f', 2, 64))
}

// sensorModel produces plausible readings: a value that wanders slowly
// around a set point (mean-reverting drift) plus small measurement noise,
// kept inside physical bounds.
type sensorModel struct {
	value    float64 // the underlying, noise-free value
	setPoint float64
	drift    float64 // largest random step of the underlying value per tick
	noise    float64 // standard deviation of the measurement noise
	min, max float64
}

// next advances the model by one tick and returns the reading.
func (m *sensorModel) next(r *rand.Rand) float64 {
	m.value += (r.Float64()*2-1)*m.drift + (m.setPoint-m.value)*0.02
	m.value = clamp(m.value, m.min, m.max)
	return round2(clamp(m.value+r.NormFloat64()*m.noise, m.min, m.max))
}

// batteryModel drains slowly and wraps to full, as if recharged.
type batteryModel struct {
	level float64 // percent
	drain float64 // percent per tick
}

func (b *batteryModel) next(r *rand.Rand) float64 {
	b.level -= b.drain * (0.5 + r.Float64())
	if b.level < 5 {
		b.level = 100
	}
	return round2(b.level)
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// parseLED accepts the LED actuator's PUT payloads.
func parseLED(p []byte) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(string(p))) {
	case "on", "1", "true":
		return true, nil
	case "off", "0", "false":
		return false, nil
	}
	return false, fmt.Errorf("led: want on or off, got %q", truncate(string(p), 32))
}

func ledText(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// truncate shortens s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
