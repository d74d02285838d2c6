package dtls

import (
	"fmt"
	"strings"

	pdtls "github.com/pion/dtls/v2"
)

// CipherSuite identifies a DTLS cipher suite (the IANA value).
type CipherSuite = pdtls.CipherSuiteID

// DefaultPSKSuites are offered for PSK authentication: the RFC 7252 §9.1.3.1
// mandatory TLS_PSK_WITH_AES_128_CCM_8 first, then the other AEAD PSK suites
// pion implements.
var DefaultPSKSuites = []CipherSuite{
	pdtls.TLS_PSK_WITH_AES_128_CCM_8,
	pdtls.TLS_PSK_WITH_AES_128_CCM,
	pdtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	pdtls.TLS_PSK_WITH_AES_256_CCM_8,
}

// DefaultCertSuites are offered for certificate authentication: the RFC 7252
// §9.1.3.3 mandatory TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 first, then the other
// ECDSA AEAD suites pion implements.
var DefaultCertSuites = []CipherSuite{
	pdtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
	pdtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
	pdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	pdtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
}

// suiteNames maps configuration names to suites.
var suiteNames = map[string]CipherSuite{
	"TLS_PSK_WITH_AES_128_CCM_8":              pdtls.TLS_PSK_WITH_AES_128_CCM_8,
	"TLS_PSK_WITH_AES_128_CCM":                pdtls.TLS_PSK_WITH_AES_128_CCM,
	"TLS_PSK_WITH_AES_128_GCM_SHA256":         pdtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	"TLS_PSK_WITH_AES_256_CCM_8":              pdtls.TLS_PSK_WITH_AES_256_CCM_8,
	"TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8":      pdtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
	"TLS_ECDHE_ECDSA_WITH_AES_128_CCM":        pdtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
	"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": pdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": pdtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
}

// ParseCipherSuite returns the suite with the given IANA name, for
// configuration files. Only AEAD suites are accepted.
func ParseCipherSuite(name string) (CipherSuite, error) {
	s, ok := suiteNames[name]
	if !ok {
		return 0, fmt.Errorf("%w: unknown or unsupported cipher suite %q", ErrConfig, name)
	}
	return s, nil
}

// suitesFor returns the explicit list or the defaults for the enabled
// authentication modes.
func suitesFor(explicit []CipherSuite, psk, cert bool) []CipherSuite {
	if len(explicit) > 0 {
		return append([]CipherSuite(nil), explicit...)
	}
	var out []CipherSuite
	if psk {
		out = append(out, DefaultPSKSuites...)
	}
	if cert {
		out = append(out, DefaultCertSuites...)
	}
	return out
}

// CipherSuiteName returns the IANA name of a suite.
func CipherSuiteName(s CipherSuite) string { return pdtls.CipherSuiteName(s) }

// isPSKSuite reports whether a suite authenticates with a pre-shared key.
func isPSKSuite(id CipherSuite) bool {
	return strings.Contains(pdtls.CipherSuiteName(id), "_PSK_")
}

// choosesPSK reports whether the suite a handshake settles on is a PSK
// suite: as pion picks it, the first offered suite (in the client's order
// of preference) that local holds.
func choosesPSK(offered []uint16, local []CipherSuite) bool {
	for _, id := range offered {
		for _, l := range local {
			if CipherSuite(id) == l {
				return isPSKSuite(l)
			}
		}
	}
	return false
}

// filterSuites keeps the suites for which keep is true.
func filterSuites(in []CipherSuite, keep func(CipherSuite) bool) []CipherSuite {
	var out []CipherSuite
	for _, s := range in {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}
