package mqttside

import "fmt"

// validateMessage applies the checks every client makes before publishing.
func validateMessage(m Message, maxPayload int, allowEmptyLevels bool) error {
	if err := ValidatePublishTopic(m.Topic, allowEmptyLevels); err != nil {
		return err
	}
	if err := ValidateQoS(m.QoS); err != nil {
		return err
	}
	if maxPayload > 0 && len(m.Payload) > maxPayload {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrPayloadTooLarge, len(m.Payload), maxPayload)
	}
	return nil
}

// ValidateMessage applies the checks a client makes before publishing m
// (topic, QoS, payload size), for a caller that wants the verdict without
// publishing: a dry run through the bridge's rules.
func ValidateMessage(m Message, maxPayload int, allowEmptyLevels bool) error {
	return validateMessage(m, maxPayload, allowEmptyLevels)
}
