package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/keys"
)

// testCA is a throwaway ECDSA certificate authority writing PEM files.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // CA certificate PEM
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, file: file}
}

// issue writes a leaf certificate and key and returns their paths.
func (ca *testCA) issue(t *testing.T, dir, cn string, usage x509.ExtKeyUsage, ips ...net.IP) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(dir, cn+".pem")
	keyFile = filepath.Join(dir, cn+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCoapDTLSCertificates(t *testing.T) {
	verifyNoLeaks(t)
	dir := t.TempDir()
	ca := newTestCA(t, dir, "test-ca")
	other := newTestCA(t, dir, "other-ca")
	srvCert, srvKey := ca.issue(t, dir, "device", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	cliCert, cliKey := ca.issue(t, dir, "operator", x509.ExtKeyUsageClientAuth)

	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := dtls.LoadCertPool(ca.file)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := dtls.Listen("udp", "127.0.0.1:0", dtls.ServerConfig{Certificate: &pair, ClientCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	startTestDevice(t, sc)
	url := "coaps://" + sc.LocalAddr().String() + "/text"
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pin := keys.PinOf(leaf).String()

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{name: "client certificate", args: []string{"--cert", cliCert, "--key", cliKey, "--ca", ca.file}},
		{name: "untrusted server", args: []string{"--timeout", "2s", "--cert", cliCert, "--key", cliKey, "--ca", other.file}, code: exitTransport, stderr: "DTLS handshake"},
		{name: "no client certificate", args: []string{"--timeout", "2s", "--ca", ca.file}, code: exitTransport, stderr: "DTLS handshake"},
		{name: "cert without key", args: []string{"--cert", cliCert, "--ca", ca.file}, code: exitUsage, stderr: "go together"},
		{name: "server pinned", args: []string{"--cert", cliCert, "--key", cliKey, "--pin", pin}},
		{name: "wrong pin", args: []string{"--timeout", "2s", "--cert", cliCert, "--key", cliKey, "--pin", keys.PinOf(other.cert).String()}, code: exitTransport, stderr: "DTLS handshake"},
		{name: "bad pin", args: []string{"--cert", cliCert, "--key", cliKey, "--pin", "sha256:00"}, code: exitUsage, stderr: "bad pin"},
		{name: "missing ca file", args: []string{"--cert", cliCert, "--key", cliKey, "--ca", filepath.Join(dir, "nope.pem")}, code: exitUsage, stderr: "nope.pem"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, append(append([]string{"coap", "get"}, tc.args...), url)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, out, errOut)
			}
			if tc.code == 0 && out != "hello\n" {
				t.Errorf("stdout %q", out)
			}
			if !strings.Contains(errOut, tc.stderr) {
				t.Errorf("stderr %q lacks %q", errOut, tc.stderr)
			}
		})
	}
}
