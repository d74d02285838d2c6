package httpcoap

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeForwarder records the requests it gets and answers with fn (a 2.05
// without payload when fn is nil).
type fakeForwarder struct {
	mu   sync.Mutex
	reqs []*Request
	fn   func(ctx context.Context, req *Request) (*Response, error)
}

func (f *fakeForwarder) Forward(ctx context.Context, req *Request) (*Response, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	if f.fn == nil {
		return &Response{Code: 0x45, ContentFormat: -1}, nil
	}
	return f.fn(ctx, req)
}

// only returns the one request the forwarder got.
func (f *fakeForwarder) only(t *testing.T) *Request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) != 1 {
		t.Fatalf("forwarder got %d requests, want 1", len(f.reqs))
	}
	return f.reqs[0]
}

func (f *fakeForwarder) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

// answer makes a forwarder that returns resp.
func answer(resp *Response) *fakeForwarder {
	return &fakeForwarder{fn: func(context.Context, *Request) (*Response, error) {
		c := *resp
		return &c, nil
	}}
}

func failing(err error) *fakeForwarder {
	return &fakeForwarder{fn: func(context.Context, *Request) (*Response, error) { return nil, err }}
}

// do serves one request through a Handler mounted at /coap/.
func do(t *testing.T, f Forwarder, method, target string, body io.Reader, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	h := &Handler{Prefix: "/coap/", F: f}
	r := httptest.NewRequest(method, target, body)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// wantTextError checks an error answer: its status and a short text/plain
// body containing want.
func wantTextError(t *testing.T, rec *httptest.ResponseRecorder, status int, want string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d (body %q)", rec.Code, status, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	body := rec.Body.String()
	if body == "" || len(body) > 300 || !strings.Contains(body, want) {
		t.Errorf("body %q, want a short text containing %q", body, want)
	}
}
