package dtls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
)

// LoadCertificate reads a PEM certificate chain and its private key.
func LoadCertificate(certFile, keyFile string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: certificate: %w", ErrConfig, err)
	}
	return c, nil
}

// LoadCertPool reads a PEM file of CA certificates.
func LoadCertPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: ca file: %w", ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%w: ca file %s: no PEM certificates", ErrConfig, file)
	}
	return pool, nil
}

// certVerifier checks a peer's certificate chain against a CA pool and/or a
// pin set. It replaces pion's built-in chain check so that both trust
// mechanisms share one path and failures carry ErrBadCertificate.
type certVerifier struct {
	roots      *x509.CertPool
	pins       map[Pin]struct{}
	usage      x509.ExtKeyUsage
	serverName string
	now        func() time.Time
}

func newCertVerifier(roots *x509.CertPool, pins []Pin, usage x509.ExtKeyUsage, serverName string, now func() time.Time) *certVerifier {
	v := &certVerifier{roots: roots, usage: usage, serverName: serverName, now: now}
	if len(pins) > 0 {
		v.pins = make(map[Pin]struct{}, len(pins))
		for _, p := range pins {
			v.pins[p] = struct{}{}
		}
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v
}

// enabled reports whether any trust anchor is configured.
func (v *certVerifier) enabled() bool { return v.roots != nil || len(v.pins) > 0 }

// verify returns the accepted leaf certificate. The caller has already
// checked (in the handshake) that the peer holds the leaf's private key.
func (v *certVerifier) verify(raw [][]byte) (*x509.Certificate, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrBadCertificate)
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	if _, ok := v.pins[keys.PinOf(leaf)]; ok {
		return leaf, nil
	}
	if v.roots == nil {
		return nil, fmt.Errorf("%w: key %s is not pinned", ErrBadCertificate, keys.PinOf(leaf))
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return nil, fmt.Errorf("%w: intermediate: %w", ErrBadCertificate, err)
		}
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: inter,
		CurrentTime:   v.now(),
		DNSName:       v.serverName,
		KeyUsages:     []x509.ExtKeyUsage{v.usage},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	return leaf, nil
}

// certIdentity is the identity of a certificate peer: its subject common
// name, or its pin when the certificate has no CN.
func certIdentity(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return keys.PinOf(c).String()
}
