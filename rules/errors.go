package rules

import "errors"

// Sentinel errors. Runtime failures (rendering, matching, payload conversion,
// expression evaluation) wrap one of these so the bridge can count them by
// cause with errors.Is.
var (
	// ErrInvalid is matched (errors.Is) by an Errors value: the rule files
	// did not load.
	ErrInvalid = errors.New("rules: invalid rule files")
	// ErrFileTooLarge reports a rule file larger than MaxFileSize.
	ErrFileTooLarge = errors.New("rules: file too large")

	// ErrPattern reports a malformed path pattern, topic filter or template.
	ErrPattern = errors.New("rules: bad pattern")
	// ErrEscape reports a captured value that would leave its segment or
	// topic level (contains '/', '+', '#' or NUL, is "." or "..", or is
	// empty). The caller drops the message and counts it.
	ErrEscape = errors.New("rules: captured value escapes its segment")
	// ErrMissingCapture reports a template that names a capture the caller
	// did not supply.
	ErrMissingCapture = errors.New("rules: capture not bound")
	// ErrNoIdentity reports a template naming {identity} rendered for a
	// client without an authenticated identity (plain CoAP); it comes
	// with ErrMissingCapture. CoAP answers 4.01 Unauthorized.
	ErrNoIdentity = errors.New("rules: {identity} needs a DTLS-authenticated client")
	// ErrNoRoute reports a path or topic that no rule matches.
	ErrNoRoute = errors.New("rules: no matching rule")
	// ErrMethodNotAllowed reports a path some rule matches, but not for the
	// request's method (CoAP 4.05, RFC 7252 §5.9.2.6).
	ErrMethodNotAllowed = errors.New("rules: method not allowed")
	// ErrUnknownDevice reports a rendered URL whose host names no device.
	ErrUnknownDevice = errors.New("rules: unknown device")
	// ErrIdentity reports a request whose authenticated identity does not
	// match the identity the rule requires.
	ErrIdentity = errors.New("rules: identity mismatch")

	// ErrConvert reports a payload that could not be converted.
	ErrConvert = errors.New("rules: payload conversion failed")
	// ErrContentFormat reports a Content-Format the conversion does not
	// support.
	ErrContentFormat = errors.New("rules: unsupported content format")
	// ErrExpr reports an expression that failed at run time or produced a
	// value of the wrong type.
	ErrExpr = errors.New("rules: expression failed")
)
