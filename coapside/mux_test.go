package coapside

import (
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// recorder is a ResponseWriter for handler tests.
type recorder struct {
	code    message.Code
	opts    message.Options
	payload []byte
}

func (w *recorder) SetCode(c message.Code)    { w.code = c }
func (w *recorder) Options() *message.Options { return &w.opts }
func (w *recorder) SetContentFormat(mt message.MediaType) {
	w.opts = w.opts.SetContentFormat(mt)
}
func (w *recorder) Write(p []byte) (int, error) {
	w.payload = append(w.payload, p...)
	return len(p), nil
}

func reqFor(method message.Code, path string) *Request {
	return &Request{Method: method, Options: message.Options{}.SetPath(path)}
}

func TestServeMuxRouting(t *testing.T) {
	mux := NewServeMux()
	tag := func(name string) HandlerFunc {
		return func(w ResponseWriter, r *Request) { _, _ = w.Write([]byte(name)) }
	}
	mux.Handle("/a/b", tag("a-b"))
	mux.Handle("/a/{x}", tag("a-x"))
	mux.Handle("/a/{rest...}", tag("a-rest"))
	mux.Handle("POST /a/b", tag("post-a-b"))
	mux.Handle("/telemetry/{device}/{metric}", tag("telemetry"))
	mux.Handle("/", tag("root"))
	mux.Handle("GET /only-get", tag("only-get"))
	tests := []struct {
		method  message.Code
		path    string
		want    string
		code    message.Code
		pattern string
		values  map[string]string
	}{
		{message.GET, "/a/b", "a-b", 0, "/a/b", nil},
		{message.POST, "/a/b", "post-a-b", 0, "POST /a/b", nil},
		{message.GET, "/a/z", "a-x", 0, "/a/{x}", map[string]string{"x": "z"}},
		{message.GET, "/a/z/y/w", "a-rest", 0, "/a/{rest...}", map[string]string{"rest": "z/y/w"}},
		{message.GET, "/a", "a-rest", 0, "/a/{rest...}", map[string]string{"rest": ""}},
		{message.PUT, "/telemetry/dev1/temp", "telemetry", 0, "/telemetry/{device}/{metric}", map[string]string{"device": "dev1", "metric": "temp"}},
		{message.GET, "/", "root", 0, "/", nil},
		{message.GET, "/nope", "", message.NotFound, "", nil},
		{message.GET, "/telemetry/dev1", "", message.NotFound, "", nil},
		{message.POST, "/only-get", "", message.MethodNotAllowed, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method.String()+" "+tt.path, func(t *testing.T) {
			w := &recorder{}
			r := reqFor(tt.method, tt.path)
			mux.ServeCOAP(w, r)
			if string(w.payload) != tt.want || w.code != tt.code {
				t.Fatalf("got %q %v, want %q %v", w.payload, w.code, tt.want, tt.code)
			}
			if r.Pattern() != tt.pattern {
				t.Fatalf("pattern %q want %q", r.Pattern(), tt.pattern)
			}
			for k, v := range tt.values {
				if got := r.PathValue(k); got != v {
					t.Fatalf("PathValue(%q) = %q want %q", k, got, v)
				}
			}
		})
	}
}

func TestServeMuxSegmentWithSlash(t *testing.T) {
	// A Uri-Path segment may itself contain "/" (percent-encoded in the URL).
	mux := NewServeMux()
	mux.HandleFunc("/d/{id}", func(w ResponseWriter, r *Request) { _, _ = w.Write([]byte(r.PathValue("id"))) })
	r := &Request{Method: message.GET, Options: message.Options{}.AddString(message.URIPath, "d").AddString(message.URIPath, "a/b")}
	w := &recorder{}
	mux.ServeCOAP(w, r)
	if string(w.payload) != "a/b" {
		t.Fatalf("got %q %v", w.payload, w.code)
	}
}

func TestServeMuxBadPatterns(t *testing.T) {
	for _, p := range []string{"a/b", "/a/{rest...}/b", "/a/{x}/{x}", "/a/{}", "/a/b{c}", "BREW /pot", "/dup"} {
		t.Run(p, func(t *testing.T) {
			mux := NewServeMux()
			if p == "/dup" {
				mux.HandleFunc("/dup", NotFound)
			}
			defer func() {
				if recover() == nil {
					t.Fatalf("Handle(%q) did not panic", p)
				}
			}()
			mux.HandleFunc(p, NotFound)
		})
	}
}

func TestMiddlewareChainOrder(t *testing.T) {
	var order []string
	mw := func(name string) Middleware {
		return func(next Handler) Handler {
			return HandlerFunc(func(w ResponseWriter, r *Request) {
				order = append(order, name)
				next.ServeCOAP(w, r)
			})
		}
	}
	h := Chain(HandlerFunc(func(w ResponseWriter, r *Request) { order = append(order, "h") }), mw("outer"), mw("inner"))
	h.ServeCOAP(&recorder{}, reqFor(message.GET, "/"))
	if len(order) != 3 || order[0] != "outer" || order[1] != "inner" || order[2] != "h" {
		t.Fatalf("order %v", order)
	}
}

func TestErrorWritesCode(t *testing.T) {
	tests := []struct {
		err  error
		want message.Code
	}{
		{message.Forbidden, message.Forbidden},
		{ErrTimeout, message.InternalServerError},
		{message.Content, message.InternalServerError}, // a success code is not an error reply
	}
	for _, tt := range tests {
		w := &recorder{}
		Error(w, tt.err)
		if w.code != tt.want || string(w.payload) != tt.err.Error() {
			t.Fatalf("Error(%v): %v %q", tt.err, w.code, w.payload)
		}
	}
}
