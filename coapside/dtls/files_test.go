package dtls

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadServerConfigAndCredentials(t *testing.T) {
	dir := t.TempDir()
	ca := newPKI(t, "files CA")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := writePEM(t, dir, "server", ca.issue(t, leafOpts{cn: "bridge", usage: x509.ExtKeyUsageServerAuth}))
	devCert, devKey := writePEM(t, dir, "dev", ca.issue(t, leafOpts{cn: "dev", usage: x509.ExtKeyUsageClientAuth}))
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
		{name: "psk", dev: DeviceFiles{PSKIdentity: "dev", PSK: "base64:ABEi"}},
		{name: "cert", dev: DeviceFiles{CertFile: devCert, KeyFile: devKey, CAFile: caFile}},
		{name: "pin only", dev: DeviceFiles{Pins: []string{PinOf(ca.cert).String()}}},
		{name: "psk without key", dev: DeviceFiles{PSKIdentity: "dev"}, wantErr: ErrConfig},
		{name: "bad key", dev: DeviceFiles{PSKIdentity: "dev", PSK: "hex:xyz"}, wantErr: ErrKey},
		{name: "bad pin", dev: DeviceFiles{Pins: []string{"sha256:12"}}, wantErr: ErrConfig},
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
