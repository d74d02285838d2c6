package linkformat

import "errors"

// Sentinel errors. Parse and filter errors wrap one of these with the offset
// or value that caused them, so callers can test with errors.Is.
var (
	// ErrSyntax reports a link-format document that does not follow the
	// grammar of RFC 6690 §2.
	ErrSyntax = errors.New("linkformat: syntax error")
	// ErrBadNumber reports a ct or sz attribute that is not a valid number.
	ErrBadNumber = errors.New("linkformat: bad numeric attribute")
	// ErrBadQuery reports a discovery query that is not a valid filter.
	ErrBadQuery = errors.New("linkformat: bad query")
	// ErrInvalid reports a Link or Resource that cannot be encoded, such as a
	// target containing ">" or a parameter name with forbidden characters.
	ErrInvalid = errors.New("linkformat: invalid link")
)
