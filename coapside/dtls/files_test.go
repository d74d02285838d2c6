package dtls

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func TestLoadServerConfigAndCredentials(t *testing.T) {
	dir := t.TempDir()
	ca := testkit.NewCA(t, "files CA")
	caFile := ca.WriteCert(t, dir, "ca.pem")
	certFile, keyFile := testkit.WritePair(t, dir, "server", ca.Issue(t, testkit.Leaf{CN: "bridge", Usage: x509.ExtKeyUsageServerAuth}))
	devCert, devKey := testkit.WritePair(t, dir, "dev", ca.Issue(t, testkit.Leaf{CN: "dev", Usage: x509.ExtKeyUsageClientAuth}))
	pskFile := filepath.Join(dir, "psk.toml")
	if err := os.WriteFile(pskFile, []byte("[[psk]]\nidentity = \"dev\"\nkey = \"hex:0011\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	serverTests := []struct {
		name    string
		files   ServerFiles
		wantErr error
	}{
		{name: "psk only", files: ServerFiles{PSKFile: pskFile, IdentityHint: "h"}},
		{name: "cert and ca", files: ServerFiles{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}},
		{name: "everything", files: ServerFiles{PSKFile: pskFile, CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}},
		{name: "nothing", files: ServerFiles{}, wantErr: ErrConfig},
		{name: "cert without key", files: ServerFiles{CertFile: certFile}, wantErr: ErrConfig},
		{name: "missing psk file", files: ServerFiles{PSKFile: missing}, wantErr: ErrPSKFile},
		{name: "garbage ca", files: ServerFiles{CertFile: certFile, KeyFile: keyFile, ClientCAFile: garbage}, wantErr: ErrConfig},
		{name: "key mismatch", files: ServerFiles{CertFile: certFile, KeyFile: devKey}, wantErr: ErrConfig},
	}
	for _, tt := range serverTests {
		t.Run("server/"+tt.name, func(t *testing.T) {
			cfg, err := LoadServerConfig(tt.files, Limits{})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (tt.files.PSKFile != "") != (cfg.PSK != nil) || (tt.files.CertFile != "") != (cfg.Certificate != nil) ||
				(tt.files.ClientCAFile != "") != (cfg.ClientCAs != nil) {
				t.Fatalf("config does not match files: %+v", cfg)
			}
		})
	}

	credTests := []struct {
		name    string
		dev     DeviceFiles
		wantErr error
	}{
		{name: "psk", dev: DeviceFiles{PSKIdentity: "dev", PSK: mustKey(t, "base64:ABEi")}},
		{name: "cert", dev: DeviceFiles{CertFile: devCert, KeyFile: devKey, CAFile: caFile}},
		{name: "pin only", dev: DeviceFiles{Pins: []Pin{keys.PinOf(ca.Cert)}}},
		{name: "cert and pin", dev: DeviceFiles{CertFile: devCert, KeyFile: devKey, Pins: []Pin{keys.PinOf(ca.Cert)}}},
		{name: "psk without key", dev: DeviceFiles{PSKIdentity: "dev"}, wantErr: ErrConfig},
		{name: "key without identity", dev: DeviceFiles{PSK: mustKey(t, "k")}, wantErr: ErrConfig},
		{name: "long identity", dev: DeviceFiles{PSKIdentity: strings.Repeat("i", MaxIdentityLen+1), PSK: mustKey(t, "k")}, wantErr: ErrConfig},
		{name: "cert without key", dev: DeviceFiles{CertFile: devCert, CAFile: caFile}, wantErr: ErrConfig},
		{name: "cert without trust", dev: DeviceFiles{CertFile: devCert, KeyFile: devKey}, wantErr: ErrConfig},
		{name: "missing ca", dev: DeviceFiles{CAFile: missing}, wantErr: ErrConfig},
	}
	for _, tt := range credTests {
		t.Run("device/"+tt.name, func(t *testing.T) {
			_, err := LoadCredentials(tt.dev)
			if tt.wantErr == nil && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestLimitsDefaults(t *testing.T) {
	var l Limits
	l.setDefaults()
	if l.HandshakeTimeout != 10*time.Second || l.MaxHandshakes != 128 || l.MaxSessions != 4096 ||
		l.IdleTimeout != 10*time.Minute || l.Logger == nil || l.MTU != 1200 {
		t.Fatalf("defaults %+v", l)
	}
	off := Limits{IdleTimeout: -1, MaxSessions: 7}
	off.setDefaults()
	if off.IdleTimeout >= 0 || off.MaxSessions != 7 {
		t.Fatalf("explicit values overridden: %+v", off)
	}
	srv, err := Listen("udp", "127.0.0.1:0", ServerConfig{PSK: NewPSKStore(nil), Limits: off})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if srv.cfg.CookieTimeout != 3*time.Second || srv.ep.opt.idleTimeout >= 0 {
		t.Fatalf("server options %+v", srv.ep.opt)
	}
}
