package main

import (
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
	"github.com/coap-mqtt/bridge/e2e/testkit"
)

func TestCoapDTLSCertificates(t *testing.T) {
	verifyNoLeaks(t)
	dir := t.TempDir()
	ca, other := testkit.NewCA(t, "test-ca"), testkit.NewCA(t, "other-ca")
	caFile, otherFile := ca.WriteCert(t, dir, "test-ca.pem"), other.WriteCert(t, dir, "other-ca.pem")
	pair := ca.Issue(t, testkit.Leaf{CN: "device", Usage: x509.ExtKeyUsageServerAuth, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	cliCert, cliKey := testkit.WritePair(t, dir, "operator", ca.Issue(t, testkit.Leaf{CN: "operator", Usage: x509.ExtKeyUsageClientAuth}))

	pool, err := dtls.LoadCertPool(caFile)
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
		{name: "client certificate", args: []string{"--cert", cliCert, "--key", cliKey, "--ca", caFile}},
		{name: "untrusted server", args: []string{"--timeout", "2s", "--cert", cliCert, "--key", cliKey, "--ca", otherFile}, code: exitTransport, stderr: "DTLS handshake"},
		{name: "no client certificate", args: []string{"--timeout", "2s", "--ca", caFile}, code: exitTransport, stderr: "DTLS handshake"},
		{name: "cert without key", args: []string{"--cert", cliCert, "--ca", caFile}, code: exitUsage, stderr: "go together"},
		{name: "server pinned", args: []string{"--cert", cliCert, "--key", cliKey, "--pin", pin}},
		{name: "wrong pin", args: []string{"--timeout", "2s", "--cert", cliCert, "--key", cliKey, "--pin", keys.PinOf(other.Cert).String()}, code: exitTransport, stderr: "DTLS handshake"},
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
