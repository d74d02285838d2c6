package message

// UnrecognizedCritical returns the first option that must be treated as an
// unrecognized critical option, and true if there is one:
//   - an unknown critical option number (RFC 7252 §5.4.1),
//   - a known critical option whose length is outside the registered bounds
//     (RFC 7252 §5.4.3),
//   - a second occurrence of a non-repeatable critical option (RFC 7252 §5.4.5).
//
// known decides which numbers the receiver understands; nil means the registry.
// Elective options that fail these checks are to be silently ignored.
func (o Options) UnrecognizedCritical(known func(OptionID) bool) (OptionID, bool) {
	for i, op := range o {
		if !op.ID.Critical() {
			continue
		}
		def, ok := optionDefs[op.ID]
		if known != nil {
			ok = known(op.ID)
		}
		if !ok {
			return op.ID, true
		}
		if def.Name == "" { // accepted by known but not in the registry
			continue
		}
		if len(op.Value) < def.MinLen || len(op.Value) > def.MaxLen {
			return op.ID, true
		}
		if !def.Repeatable && i > 0 && o[i-1].ID == op.ID {
			return op.ID, true
		}
	}
	return 0, false
}
