package dtls

import (
	"fmt"
)

// ServerFiles are the file settings of the bridge's coaps listener
// ([coap.dtls] in the config).
type ServerFiles struct {
	// PSKFile is a psk_file (see ParsePSKFile); "" disables PSK.
	PSKFile string
	// CertFile and KeyFile are the server's PEM certificate chain and
	// ECDSA key; "" disables certificates.
	CertFile string
	KeyFile  string
	// ClientCAFile, when set, requires client certificates chaining to
	// these CAs.
	ClientCAFile string
	// IdentityHint is sent in PSK handshakes.
	IdentityHint string
}

// LoadServerConfig reads the files and returns a validated ServerConfig
// with limits. The PSK store it returns can be reloaded with Reload.
func LoadServerConfig(f ServerFiles, limits Limits) (ServerConfig, error) {
	cfg := ServerConfig{IdentityHint: f.IdentityHint, Limits: limits}
	if f.PSKFile != "" {
		store, err := LoadPSKFile(f.PSKFile)
		if err != nil {
			return ServerConfig{}, err
		}
		cfg.PSK = store
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return ServerConfig{}, fmt.Errorf("%w: cert_file and key_file go together", ErrConfig)
	}
	if f.CertFile != "" {
		c, err := LoadCertificate(f.CertFile, f.KeyFile)
		if err != nil {
			return ServerConfig{}, err
		}
		cfg.Certificate = &c
	}
	if f.ClientCAFile != "" {
		pool, err := LoadCertPool(f.ClientCAFile)
		if err != nil {
			return ServerConfig{}, err
		}
		cfg.ClientCAs = pool
	}
	if err := cfg.Validate(); err != nil {
		return ServerConfig{}, err
	}
	return cfg, nil
}

// DeviceFiles are the DTLS trust settings of one server (a [[device]] with
// a coaps:// URL, or the command line of "bridge coap"): a PSK identity and
// key, or a client certificate and the CA file and/or SPKI pins that
// verify the server's certificate. Keys and pins arrive parsed
// (keys.ParseKey, keys.ParsePin): the rule loader parses them with the
// file:line of a mistake.
type DeviceFiles struct {
	PSKIdentity string
	PSK         Secret
	CertFile    string
	KeyFile     string
	// CAFile verifies the device's certificate.
	CAFile string
	// Pins accept a device certificate by key.
	Pins []Pin
}

// LoadCredentials turns device settings into validated Credentials: the one
// builder of a device's DTLS trust, used by the bridge and the CLI. It
// reads the certificate files; a certificate needs a way to verify the
// device (CAFile or Pins), a PSK identity needs its key.
func LoadCredentials(d DeviceFiles) (Credentials, error) {
	cr := Credentials{PSKIdentity: d.PSKIdentity, PSK: d.PSK, Pins: d.Pins}
	if (d.CertFile == "") != (d.KeyFile == "") {
		return Credentials{}, fmt.Errorf("%w: cert_file and key_file go together", ErrConfig)
	}
	if d.CertFile != "" {
		c, err := LoadCertificate(d.CertFile, d.KeyFile)
		if err != nil {
			return Credentials{}, err
		}
		cr.Certificate = &c
	}
	if d.CAFile != "" {
		pool, err := LoadCertPool(d.CAFile)
		if err != nil {
			return Credentials{}, err
		}
		cr.RootCAs = pool
	}
	if err := cr.Validate(); err != nil {
		return Credentials{}, err
	}
	return cr, nil
}
