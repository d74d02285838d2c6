package testkit

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder stands in for a test, recording a Fatalf and ending the
// goroutine as testing.T does.
type recorder struct {
	testing.TB
	fatal string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, a ...any) {
	r.fatal = fmt.Sprintf(format, a...)
	runtime.Goexit()
}

func (r *recorder) Errorf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }

// run calls f with a recorder on a goroutine of its own, so a Fatalf ends
// only that goroutine.
func run(t *testing.T, f func(tb testing.TB)) string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.fatal
}

func TestEventually(t *testing.T) {
	calls := 0
	if msg := run(t, func(tb testing.TB) {
		Eventually(tb, 5*time.Second, "the third call", func() bool { calls++; return calls == 3 })
	}); msg != "" || calls != 3 {
		t.Fatalf("a condition that comes true: %d calls, failure %q", calls, msg)
	}
	start := time.Now()
	msg := run(t, func(tb testing.TB) {
		Eventually(tb, 50*time.Millisecond, "the impossible", func() bool { return false })
	})
	if msg != "timed out after 50ms waiting for the impossible" {
		t.Fatalf("a condition that stays false: failure %q", msg)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("failed after %v, before the timeout", d)
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
				_ = b.String() // a reader at the same time; -race checks it
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 400 {
		t.Fatalf("%d lines, want 400", n)
	}
}

func TestCA(t *testing.T) {
	ca := NewCA(t, "test CA")
	other := NewCA(t, "other CA")
	if !ca.Cert.IsCA || ca.Cert.Subject.CommonName != "test CA" {
		t.Fatalf("CA certificate %v", ca.Cert.Subject)
	}
	srv := ca.Issue(t, Leaf{CN: "localhost", Usage: x509.ExtKeyUsageServerAuth,
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	verify := func(c tls.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, name string) error {
		_, err := c.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
	if err := verify(srv, ca.Pool, x509.ExtKeyUsageServerAuth, "localhost"); err != nil {
		t.Errorf("server certificate: %v", err)
	}
	if err := verify(srv, ca.Pool, x509.ExtKeyUsageServerAuth, "127.0.0.1"); err != nil {
		t.Errorf("server certificate by IP: %v", err)
	}
	if err := verify(srv, other.Pool, x509.ExtKeyUsageServerAuth, "localhost"); err == nil {
		t.Error("another CA's pool verifies the server certificate")
	}
	expired := ca.Issue(t, Leaf{CN: "dev", Usage: x509.ExtKeyUsageClientAuth,
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err := verify(expired, ca.Pool, x509.ExtKeyUsageClientAuth, ""); err == nil {
		t.Error("an expired certificate verifies")
	}

	dir := t.TempDir()
	certFile, keyFile := WritePair(t, dir, "server", srv)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("written pair does not load: %v", err)
	}
	if !pair.Leaf.Equal(srv.Leaf) {
		t.Error("written certificate differs")
	}
	caFile := ca.WriteCert(t, dir, "ca.pem")
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(b) || filepath.Base(caFile) != "ca.pem" {
		t.Errorf("CA file %s does not load", caFile)
	}
}

func TestTally(t *testing.T) {
	var c Tally
	for _, k := range []string{"a", "b", "b"} {
		c.Add(k)
	}
	if c.Total() != 3 || !c.Has("b") || c.Has("z") {
		t.Fatalf("total %d, has b %v, has z %v", c.Total(), c.Has("b"), c.Has("z"))
	}
	msg := run(t, func(tb testing.TB) { c.Check(tb, "letters", []string{"a", "b", "c"}) })
	for _, part := range []string{"letters: 3 in all, want 3", `"b"×2`, `"c"×0`} {
		if !strings.Contains(msg, part) {
			t.Errorf("failure %q lacks %s", msg, part)
		}
	}
	c = Tally{}
	c.Add("a")
	c.Add("x")
	if msg := run(t, func(tb testing.TB) { c.Check(tb, "letters", []string{"a"}) }); !strings.Contains(msg, `unexpected "x"×1`) {
		t.Errorf("failure %q does not name the unexpected key", msg)
	}
	c = Tally{}
	c.Add("a")
	if msg := run(t, func(tb testing.TB) { c.Check(tb, "letters", []string{"a"}) }); msg != "" {
		t.Errorf("exact tally failed: %q", msg)
	}
}
