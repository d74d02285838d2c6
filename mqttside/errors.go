package mqttside

import "errors"

// Sentinel errors. Functions wrap them with %w; test with errors.Is.
var (
	// ErrBrokerScheme reports a broker URL whose scheme is not one the
	// client speaks.
	ErrBrokerScheme = errors.New("mqtt: unsupported broker url scheme")
	// ErrInvalidTopic reports a topic name that may not be published to.
	ErrInvalidTopic = errors.New("mqtt: invalid topic name")
	// ErrInvalidFilter reports a malformed topic filter.
	ErrInvalidFilter = errors.New("mqtt: invalid topic filter")
	// ErrInvalidQoS reports a QoS other than 0, 1 or 2.
	ErrInvalidQoS = errors.New("mqtt: invalid QoS")
	// ErrPayloadTooLarge reports a payload above the configured limit.
	ErrPayloadTooLarge = errors.New("mqtt: payload too large")
	// ErrBufferFull reports a QoS 1/2 publish refused because the offline
	// buffer is full. The caller should ask its source to retry later.
	ErrBufferFull = errors.New("mqtt: offline buffer full")
	// ErrDropped reports a QoS 0 message dropped from a full offline buffer
	// to make room for a newer one.
	ErrDropped = errors.New("mqtt: QoS 0 message dropped from full offline buffer")
	// ErrPending reports that the context ended after the message was
	// accepted; the message is still queued and will be delivered.
	ErrPending = errors.New("mqtt: message accepted, delivery pending")
	// ErrWithdrawn reports a message taken back out of the offline buffer
	// by PublishOrWithdraw because its context ended before it could be
	// sent: it is never published.
	ErrWithdrawn = errors.New("mqtt: message withdrawn before it was sent")
	// ErrNotConnected reports an operation that needs a live connection.
	ErrNotConnected = errors.New("mqtt: not connected")
	// ErrClosed reports use of a client after Close.
	ErrClosed = errors.New("mqtt: client closed")
	// ErrNotStarted reports use of a client before Start.
	ErrNotStarted = errors.New("mqtt: client not started")
	// ErrBrokerRefused reports a broker that refused the connection
	// (bad credentials, not authorised, bad client identifier).
	ErrBrokerRefused = errors.New("mqtt: broker refused connection")
	// ErrSubscribeRefused reports a SUBSCRIBE the broker answered with a
	// failure return code.
	ErrSubscribeRefused = errors.New("mqtt: subscription refused by broker")
	// ErrInvalidOptions reports unusable options.
	ErrInvalidOptions = errors.New("mqtt: invalid options")
	// ErrAuthFile reports a malformed auth/ACL file.
	ErrAuthFile = errors.New("mqtt: invalid auth file")
)
