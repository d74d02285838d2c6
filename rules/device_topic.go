package rules

import "fmt"

// ParseDeviceTopic parses a per-device topic template such as
// "devices/{device}/status": an MQTT topic whose only capture is {device},
// one level, so that every device gets a topic of its own and no two
// devices share one. Wildcards are refused as in any topic template
// ([MQTT-4.7.1-1]).
func ParseDeviceTopic(s string) (Pattern, error) {
	p, err := ParseTopic(s)
	if err != nil {
		return p, err
	}
	return p, p.checkDeviceTemplate()
}

// checkDeviceTemplate reports a capture other than {device}, {device...},
// or a missing {device}.
func (p Pattern) checkDeviceTemplate() error {
	for _, seg := range p.Segments() {
		switch {
		case seg.Kind == SegLiteral:
		case seg.Text != "device":
			return fmt.Errorf("%w: the only capture allowed is {device}, got {%s}", ErrPattern, seg.Text)
		case seg.Kind == SegRest:
			return fmt.Errorf("%w: {device...} spans levels; use {device}", ErrPattern)
		}
	}
	if !p.Has("device") {
		return fmt.Errorf("%w: needs {device}, or every device would share one topic", ErrPattern)
	}
	return nil
}
