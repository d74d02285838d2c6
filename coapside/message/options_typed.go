package message

// Typed accessors for the remaining registered options (RFC 7252 §5.10,
// RFC 7959, RFC 9175). Each getter reports whether the option is present;
// setters replace every occurrence.

// IfMatch returns every If-Match value (RFC 7252 §5.10.8.1).
func (o Options) IfMatch() [][]byte { return o.All(IfMatch) }

// AddIfMatch appends an If-Match value (an ETag, or empty for "exists").
func (o Options) AddIfMatch(etag []byte) Options { return o.Add(IfMatch, etag) }

// Host returns the Uri-Host option.
func (o Options) Host() (string, bool) { return o.String(URIHost) }

// SetHost sets the Uri-Host option.
func (o Options) SetHost(h string) Options { return o.SetString(URIHost, h) }

// ETags returns every ETag value (several are allowed in a request, §5.10.6).
func (o Options) ETags() [][]byte { return o.All(ETag) }

// SetETag sets a single ETag value.
func (o Options) SetETag(tag []byte) Options { return o.Set(ETag, tag) }

// IfNoneMatch reports whether If-None-Match is present (RFC 7252 §5.10.8.2).
func (o Options) IfNoneMatch() bool { return o.Has(IfNoneMatch) }

// SetIfNoneMatch adds the empty If-None-Match option.
func (o Options) SetIfNoneMatch() Options { return o.Set(IfNoneMatch, nil) }

// SetObserve sets the Observe option (RFC 7641 §2); values are 24-bit.
func (o Options) SetObserve(v uint32) Options { return o.SetUint(Observe, v&0xffffff) }

// Port returns the Uri-Port option.
func (o Options) Port() (uint16, bool) {
	v, err := o.Uint(URIPort)
	return uint16(v), err == nil && v <= 0xffff
}

// SetPort sets the Uri-Port option.
func (o Options) SetPort(p uint16) Options { return o.SetUint(URIPort, uint32(p)) }

// LocationQueries returns the Location-Query values.
func (o Options) LocationQueries() []string { return o.Strings(LocationQuery) }

// SetMaxAge sets Max-Age in seconds.
func (o Options) SetMaxAge(seconds uint32) Options { return o.SetUint(MaxAge, seconds) }

// SetAccept sets the Accept option.
func (o Options) SetAccept(mt MediaType) Options { return o.SetUint(Accept, uint32(mt)) }

// Block1Value returns the raw Block1 value (decode it with the block package).
func (o Options) Block1Value() (uint32, bool) {
	v, err := o.Uint(Block1)
	return v, err == nil
}

// Block2Value returns the raw Block2 value (decode it with the block package).
func (o Options) Block2Value() (uint32, bool) {
	v, err := o.Uint(Block2)
	return v, err == nil
}

// Size1 returns the Size1 option (request body size, RFC 7252 §5.10.9).
func (o Options) Size1() (uint32, bool) {
	v, err := o.Uint(Size1)
	return v, err == nil
}

// Size2 returns the Size2 option (response body size, RFC 7959 §4).
func (o Options) Size2() (uint32, bool) {
	v, err := o.Uint(Size2)
	return v, err == nil
}

// ProxyURI returns the Proxy-Uri option (RFC 7252 §5.10.2).
func (o Options) ProxyURI() (string, bool) { return o.String(ProxyURI) }

// ProxyScheme returns the Proxy-Scheme option.
func (o Options) ProxyScheme() (string, bool) { return o.String(ProxyScheme) }

// Echo returns the Echo option (RFC 9175 §2.2).
func (o Options) Echo() ([]byte, bool) { return o.Get(Echo) }

// SetEcho sets the Echo option.
func (o Options) SetEcho(v []byte) Options { return o.Set(Echo, v) }

// RequestTags returns every Request-Tag value (RFC 9175 §3.2; repeatable).
func (o Options) RequestTags() [][]byte { return o.All(RequestTag) }

// AddRequestTag appends a Request-Tag value.
func (o Options) AddRequestTag(v []byte) Options { return o.Add(RequestTag, v) }
