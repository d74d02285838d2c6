package httpcoap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

func mt(m message.MediaType) *message.MediaType { return &m }
func u32(v uint32) *uint32                      { return &v }

func TestURIMapping(t *testing.T) {
	long := strings.Repeat("x", 256)
	cases := []struct {
		target string
		device string
		path   []string
		query  []string
	}{
		{"/coap/lamp", "lamp", nil, nil},
		{"/coap/lamp/", "lamp", nil, nil},
		{"/coap/lamp/light", "lamp", []string{"light"}, nil},
		{"/coap/lamp/a/b/c?x=1&y", "lamp", []string{"a", "b", "c"}, []string{"x=1", "y"}},
		{"/coap/la%20mp/a%2Fb/%C3%A9", "la mp", []string{"a/b", "é"}, nil},
		{"/coap/lamp/q?a%26b=c%3Dd&&e+f", "lamp", []string{"q"}, []string{"a&b=c=d", "e+f"}},
		{"/coap/lamp/q?", "lamp", []string{"q"}, nil},
	}
	for _, c := range cases {
		t.Run(c.target, func(t *testing.T) {
			f := &fakeForwarder{}
			rec := do(t, f, http.MethodGet, c.target, nil, nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			req := f.only(t)
			if req.Method != message.GET || req.Device != c.device || !reflect.DeepEqual(req.Path, c.path) || !reflect.DeepEqual(req.Query, c.query) {
				t.Errorf("got %v %q %q %q, want GET %q %q %q", req.Method, req.Device, req.Path, req.Query, c.device, c.path, c.query)
			}
		})
	}

	bad := []struct {
		target string
		status int
		want   string
	}{
		{"/coap/", 400, "no device"},
		{"/coap", 400, "no device"},
		{"/coap//light", 400, "no device"},
		{"/coap/lamp//light", 400, "empty path segment"},
		{"/coap/lamp/light/", 400, "empty path segment"},
		{"/coap/lamp/../other", 400, `".."`},
		{"/coap/lamp/%2e%2e/x", 400, `".."`},
		{"/coap/lamp/./x", 400, `"."`},
		{"/coap/../x", 400, `".."`},
		{"/coap/lamp/%FF", 400, "not UTF-8"},
		{"/coap/lamp/" + long, 400, "longer than 255"},
		{"/coap/lamp/x?" + long, 400, "longer than 255"},
		{"/other/lamp", 404, "not under /coap/"},
	}
	for _, c := range bad {
		t.Run("bad "+c.target[:min(len(c.target), 30)], func(t *testing.T) {
			f := &fakeForwarder{}
			wantTextError(t, do(t, f, http.MethodGet, c.target, nil, nil), c.status, c.want)
			if f.count() != 0 {
				t.Error("a bad path reached the forwarder")
			}
		})
	}
}

func TestPrefixForms(t *testing.T) {
	for _, p := range []string{"/coap/", "/coap", "coap"} {
		f := &fakeForwarder{}
		h := &Handler{Prefix: p, F: f}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/coap/lamp/x", nil))
		if rec.Code != http.StatusOK || f.only(t).Device != "lamp" {
			t.Errorf("prefix %q: status %d", p, rec.Code)
		}
	}
	f := &fakeForwarder{}
	h := &Handler{F: f} // mounted at the root
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/lamp/x", nil))
	if req := f.only(t); rec.Code != http.StatusOK || req.Device != "lamp" || !reflect.DeepEqual(req.Path, []string{"x"}) {
		t.Errorf("root prefix: status %d, request %+v", rec.Code, req)
	}
}

func TestMethods(t *testing.T) {
	for m, want := range map[string]message.Code{
		http.MethodGet: message.GET, http.MethodPost: message.POST,
		http.MethodPut: message.PUT, http.MethodDelete: message.DELETE,
		http.MethodHead: message.GET,
	} {
		f := &fakeForwarder{}
		if rec := do(t, f, m, "/coap/lamp/x", nil, nil); rec.Code >= 300 {
			t.Errorf("%s: status %d", m, rec.Code)
		}
		if got := f.only(t).Method; got != want {
			t.Errorf("%s mapped to %v, want %v", m, got, want)
		}
	}
	// HEAD: the GET's headers, no body, whatever the ResponseWriter does.
	f := answer(&Response{Code: message.Content, ContentFormat: 0, Payload: []byte("on")})
	rec := do(t, f, http.MethodHead, "/coap/lamp/x", nil, nil)
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") != "2" {
		t.Errorf("HEAD: status %d body %q Content-Length %q", rec.Code, rec.Body, rec.Header().Get("Content-Length"))
	}
	f = answer(&Response{Code: message.NotFound, ContentFormat: -1})
	if rec := do(t, f, http.MethodHead, "/coap/lamp/x", nil, nil); rec.Code != 404 || rec.Body.Len() != 0 {
		t.Errorf("HEAD 4.04: status %d body %q", rec.Code, rec.Body)
	}
	for _, m := range []string{http.MethodOptions, http.MethodTrace, http.MethodConnect} {
		f := &fakeForwarder{}
		wantTextError(t, do(t, f, m, "/coap/lamp/x", nil, nil), http.StatusNotImplemented, m)
		if f.count() != 0 {
			t.Errorf("%s reached the forwarder", m)
		}
	}
	for _, m := range []string{http.MethodPatch, "FETCH", "BREW"} {
		f := &fakeForwarder{}
		rec := do(t, f, m, "/coap/lamp/x", nil, nil)
		wantTextError(t, rec, http.StatusMethodNotAllowed, m)
		if got := rec.Header().Get("Allow"); got != "GET, HEAD, POST, PUT, DELETE" {
			t.Errorf("%s: Allow %q", m, got)
		}
	}
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		f := &fakeForwarder{}
		wantTextError(t, do(t, f, m, "/coap/lamp/x", strings.NewReader("x"), nil), http.StatusBadRequest, "carries no body")
	}
}

// TestHEADOverTheWire runs HEAD through a real server: the headers of the
// GET, no body.
func TestHEADOverTheWire(t *testing.T) {
	f := answer(&Response{Code: message.Content, ContentFormat: int(message.AppJSON), Payload: []byte(`{"on":true}`), ETag: []byte{1, 2}})
	srv := httptest.NewServer(&Handler{Prefix: "/coap/", F: f})
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodHead, srv.URL+"/coap/lamp/state", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	srv.Client().CloseIdleConnections()
	if resp.StatusCode != 200 || len(b) != 0 {
		t.Fatalf("status %d, body %q", resp.StatusCode, b)
	}
	if resp.ContentLength != 11 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("ETag") != `"0102"` {
		t.Errorf("headers %v, length %d", resp.Header, resp.ContentLength)
	}
	if got := f.only(t).Method; got != message.GET {
		t.Errorf("HEAD sent as %v", got)
	}
}

func TestResponseContentType(t *testing.T) {
	cases := []struct {
		cf   int
		want string
	}{
		{int(message.TextPlain), "text/plain;charset=utf-8"},
		{int(message.AppJSON), "application/json"},
		{int(message.AppCBOR), "application/cbor"},
		{int(message.AppSenMLJSON), "application/senml+json"},
		{int(message.AppSenMLCBOR), "application/senml+cbor"},
		{int(message.AppLinkFormat), "application/link-format"},
		{int(message.AppOctets), "application/octet-stream"},
		{int(message.AppXML), "application/xml"},
		{9999, "application/coap-payload;cf=9999"}, // RFC 8075 §6.2
		{-1, "application/octet-stream"},
	}
	for _, c := range cases {
		f := answer(&Response{Code: message.Content, ContentFormat: c.cf, Payload: []byte("abc")})
		rec := do(t, f, http.MethodGet, "/coap/lamp/x", nil, nil)
		if rec.Code != 200 || rec.Header().Get("Content-Type") != c.want || rec.Body.String() != "abc" {
			t.Errorf("cf %d: status %d, Content-Type %q, body %q; want %q", c.cf, rec.Code, rec.Header().Get("Content-Type"), rec.Body, c.want)
		}
	}
}

func TestAcceptMapping(t *testing.T) {
	cases := []struct {
		accept string
		want   *message.MediaType
	}{
		{"", nil},
		{"*/*", nil}, // RFC 8075 §6.1: MUST be no Accept option
		{"application/*", nil},
		{"application/cbor", mt(message.AppCBOR)},
		{"application/senml+json", mt(message.AppSenMLJSON)},
		{"text/plain; charset=utf-8", mt(message.TextPlain)},
		{"text/plain; charset=latin1", nil},
		{"text/html", nil}, // no Content-Format: ignored
		{"text/html, application/cbor;q=0.5", mt(message.AppCBOR)},
		{"application/cbor;q=0.5, application/xml;q=0.8", mt(message.AppXML)},
		{"application/cbor;q=0.5, */*;q=0.9", nil},
		{"application/cbor;q=0, application/xml;q=0.1", mt(message.AppXML)},
		{"application/json", nil}, // converted, not forwarded
		{"application/json;q=0.5, application/cbor", mt(message.AppCBOR)},
		{"application/cbor;q=bad, application/xml", mt(message.AppXML)},
		{"application/xml, application/cbor", mt(message.AppXML)}, // equal q: the first
		{"application/cbor;q=0.7, text/html;q=0.9, application/xml;q=0.7", mt(message.AppCBOR)},
	}
	for _, c := range cases {
		f := &fakeForwarder{}
		rec := do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"Accept": c.accept})
		if rec.Code != 200 {
			t.Fatalf("Accept %q: status %d", c.accept, rec.Code)
		}
		if got := f.only(t).Accept; !reflect.DeepEqual(got, c.want) {
			t.Errorf("Accept %q: CoAP Accept %v, want %v", c.accept, got, c.want)
		}
	}
	f := &fakeForwarder{}
	wantTextError(t, do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"Accept": "application/coap-payload;cf=60"}), http.StatusNotAcceptable, "coap-payload")
	if f.count() != 0 {
		t.Error("an Accept of application/coap-payload was forwarded")
	}
}

func TestJSONConversion(t *testing.T) {
	// {"temp": 21.5}
	cborMap := []byte{0xa1, 0x64, 't', 'e', 'm', 'p', 0xf9, 0x4d, 0x60}
	// [{-2 (bn): "dev/", 0 (n): "temp", 2 (v): 21.5, 1 (u): "Cel"}]
	senmlCBOR := []byte{0x81, 0xa4,
		0x21, 0x64, 'd', 'e', 'v', '/',
		0x00, 0x64, 't', 'e', 'm', 'p',
		0x02, 0xf9, 0x4d, 0x60,
		0x01, 0x63, 'C', 'e', 'l'}
	// RFC 8428 §5.1.2 style pack: base name, base time, two records.
	senmlJSON := []byte(`[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.276020076001e+09,"bu":"A","n":"voltage","u":"V","v":120.1},{"n":"current","t":-5,"v":1.2}]`)

	cases := []struct {
		name string
		cf   int
		in   []byte
		want any
	}{
		{"cbor", int(message.AppCBOR), cborMap, map[string]any{"temp": 21.5}},
		{"senml+cbor", int(message.AppSenMLCBOR), senmlCBOR, []any{map[string]any{"n": "dev/temp", "u": "Cel", "v": 21.5}}},
		{"senml+json", int(message.AppSenMLJSON), senmlJSON, []any{
			map[string]any{"n": "urn:dev:ow:10e2073a01080063:voltage", "u": "V", "v": 120.1, "t": 1.276020076001e+09},
			map[string]any{"n": "urn:dev:ow:10e2073a01080063:current", "u": "A", "v": 1.2, "t": 1.276020071001e+09},
		}},
		{"text number", int(message.TextPlain), []byte("21.50"), 21.5},
		{"text", int(message.TextPlain), []byte("on"), "on"},
		{"json", int(message.AppJSON), []byte(`{"a":1}`), map[string]any{"a": 1.0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := answer(&Response{Code: message.Content, ContentFormat: c.cf, Payload: c.in, ETag: []byte{0xab}})
			rec := do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"Accept": "application/json"})
			if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, Content-Type %q, body %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
			}
			var got any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if arr, ok := got.([]any); ok && c.name == "senml+cbor" {
				for _, r := range arr {
					delete(r.(map[string]any), "t") // relative time 0: now
				}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %#v, want %#v", got, c.want)
			}
			wantTag := `"ab-json"`
			if c.cf == int(message.AppJSON) {
				wantTag = `"ab"` // the device's own representation
			}
			if et := rec.Header().Get("ETag"); et != wantTag {
				t.Errorf("ETag %q, want %q", et, wantTag)
			}
			if v := rec.Header().Get("Vary"); v != "Accept" {
				t.Errorf("Vary %q", v)
			}
		})
	}

	// Without Accept: application/json the device's representation passes.
	f := answer(&Response{Code: message.Content, ContentFormat: int(message.AppCBOR), Payload: cborMap})
	rec := do(t, f, http.MethodGet, "/coap/lamp/x", nil, nil)
	if rec.Header().Get("Content-Type") != "application/cbor" || !bytes.Equal(rec.Body.Bytes(), cborMap) {
		t.Errorf("no Accept: Content-Type %q body %x", rec.Header().Get("Content-Type"), rec.Body.Bytes())
	}

	// A payload that is not what its format says: 502 with the reason.
	f = answer(&Response{Code: message.Content, ContentFormat: int(message.AppCBOR), Payload: []byte{0xa1, 0x64}})
	wantTextError(t, do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"Accept": "application/json"}),
		http.StatusBadGateway, "application/cbor payload does not convert to JSON")

	// A format with no JSON form: 406 unless the client also takes it as is.
	f = answer(&Response{Code: message.Content, ContentFormat: int(message.AppOctets), Payload: []byte{1, 2, 3}})
	wantTextError(t, do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"Accept": "application/json"}),
		http.StatusNotAcceptable, "no JSON form")
	wantTextError(t, do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"Accept": "application/json, application/octet-stream;q=0, */*;q=0.1"}),
		http.StatusNotAcceptable, "no JSON form")
	rec = do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"Accept": "application/json, */*;q=0.1"})
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/octet-stream" || !bytes.Equal(rec.Body.Bytes(), []byte{1, 2, 3}) {
		t.Errorf("octets under json, */*: status %d Content-Type %q", rec.Code, rec.Header().Get("Content-Type"))
	}

	// Error responses are not converted.
	f = answer(&Response{Code: message.NotFound, ContentFormat: -1, Payload: []byte("no such sensor")})
	wantTextError(t, do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"Accept": "application/json"}),
		http.StatusNotFound, "CoAP server returned 4.04 Not Found: no such sensor")
}

func TestCacheHeaders(t *testing.T) {
	cases := []struct {
		name  string
		resp  Response
		cc    string
		xc    string
		etag  string
		retry string
	}{
		{"max-age", Response{Code: message.Content, ContentFormat: 0, MaxAge: u32(30)}, "max-age=30", "MISS", "", ""},
		{"default max-age", Response{Code: message.Content, ContentFormat: 0}, "max-age=60", "MISS", "", ""},
		{"zero", Response{Code: message.Content, ContentFormat: 0, MaxAge: u32(0)}, "max-age=0", "MISS", "", ""},
		{"cached", Response{Code: message.Content, ContentFormat: 0, MaxAge: u32(12), Cached: true}, "max-age=12", "HIT", "", ""},
		{"stale", Response{Code: message.Content, ContentFormat: 0, MaxAge: u32(12), Cached: true, Stale: true}, "max-age=0", "HIT", "", ""},
		{"etag", Response{Code: message.Content, ContentFormat: 0, ETag: []byte{0xde, 0xad, 0xbe, 0xef}}, "max-age=60", "MISS", `"deadbeef"`, ""},
		{"changed", Response{Code: message.Changed, ContentFormat: -1, MaxAge: u32(30)}, "", "MISS", "", ""},
		{"5.03", Response{Code: message.ServiceUnavailable, ContentFormat: -1, MaxAge: u32(17)}, "", "MISS", "", "17"},
		{"4.29", Response{Code: message.TooManyRequests, ContentFormat: -1, MaxAge: u32(5)}, "", "MISS", "", "5"},
		{"5.03 no max-age", Response{Code: message.ServiceUnavailable, ContentFormat: -1}, "", "MISS", "", ""},
		{"5.00 max-age", Response{Code: message.InternalServerError, ContentFormat: -1, MaxAge: u32(9)}, "", "MISS", "", ""},
	}
	for _, c := range cases {
		rec := do(t, answer(&c.resp), http.MethodGet, "/coap/lamp/x", nil, nil)
		h := rec.Header()
		if h.Get("Cache-Control") != c.cc || h.Get("X-Cache") != c.xc || h.Get("ETag") != c.etag || h.Get("Retry-After") != c.retry {
			t.Errorf("%s: Cache-Control %q X-Cache %q ETag %q Retry-After %q; want %q %q %q %q", c.name,
				h.Get("Cache-Control"), h.Get("X-Cache"), h.Get("ETag"), h.Get("Retry-After"), c.cc, c.xc, c.etag, c.retry)
		}
	}
}

func TestSuccessCodes(t *testing.T) {
	cases := []struct {
		code    message.Code
		payload string
		status  int
	}{
		{message.Created, "", 201},
		{message.Created, "id=7", 201},
		{message.Deleted, "", 204},
		{message.Deleted, "gone", 200}, // note 2: a payload MUST reach the client with 200
		{message.Changed, "", 204},
		{message.Changed, "ok", 200},
		{message.Valid, "", 200}, // unconditional: note 4
		{message.NewCode(2, 6), "x", 200},
	}
	for _, c := range cases {
		f := answer(&Response{Code: c.code, ContentFormat: 0, Payload: []byte(c.payload)})
		rec := do(t, f, http.MethodPost, "/coap/lamp/x", nil, nil)
		if rec.Code != c.status || rec.Body.String() != c.payload {
			t.Errorf("%v with %q: status %d body %q, want %d", c.code, c.payload, rec.Code, rec.Body, c.status)
		}
	}
}

func TestErrorResponses(t *testing.T) {
	cases := []struct {
		resp   Response
		status int
		want   string
	}{
		{Response{Code: message.NotFound, ContentFormat: -1}, 404, "CoAP server returned 4.04 Not Found"},
		{Response{Code: message.MethodNotAllowed, ContentFormat: -1}, 400, "CoAP server returned 4.05"},
		{Response{Code: message.Unauthorized, ContentFormat: -1, Payload: []byte("key expired")}, 403, "4.01 Unauthorized: key expired"},
		{Response{Code: message.BadOption, ContentFormat: -1}, 500, "4.02 Bad Option"},
		{Response{Code: message.NewCode(4, 30), ContentFormat: -1}, 400, "4.30"},
		{Response{Code: message.NewCode(5, 9), ContentFormat: -1}, 500, "5.09"},
		{Response{Code: message.Continue, ContentFormat: -1}, 502, "2.31"},
		{Response{Code: message.NewCode(3, 1), ContentFormat: -1}, 502, "3.01"},
		{Response{Code: message.BadRequest, ContentFormat: 0, Payload: []byte("bad\xffvalue")}, 400, "bad\uFFFDvalue"},
	}
	for _, c := range cases {
		wantTextError(t, do(t, answer(&c.resp), http.MethodGet, "/coap/lamp/x", nil, nil), c.status, c.want)
	}
	// A diagnostic in a declared format other than text passes as it is.
	f := answer(&Response{Code: message.BadRequest, ContentFormat: int(message.AppCBOR), Payload: []byte{0xa0}})
	rec := do(t, f, http.MethodGet, "/coap/lamp/x", nil, nil)
	if rec.Code != 400 || rec.Header().Get("Content-Type") != "application/cbor" || !bytes.Equal(rec.Body.Bytes(), []byte{0xa0}) {
		t.Errorf("CBOR error body: status %d Content-Type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
}

func TestConditionalGET(t *testing.T) {
	valid := &Response{Code: message.Valid, ContentFormat: -1, ETag: []byte{0x0a, 0x0b}, MaxAge: u32(40)}
	f := answer(valid)
	rec := do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"If-None-Match": `"0a0b", W/"ff", "zz", "112233445566778899", 0c`})
	if got, want := f.only(t).ETags, [][]byte{{0x0a, 0x0b}, {0xff}, {0x0c}}; !reflect.DeepEqual(got, want) {
		t.Errorf("ETags %x, want %x", got, want)
	}
	if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Fatalf("status %d body %q, want 304", rec.Code, rec.Body)
	}
	if rec.Header().Get("ETag") != `"0a0b"` || rec.Header().Get("Cache-Control") != "max-age=40" {
		t.Errorf("304 headers %v", rec.Header())
	}

	// The client's JSON tag is echoed on the 304.
	f = answer(valid)
	rec = do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"If-None-Match": `"0a0b-json"`, "Accept": "application/json"})
	if rec.Code != 304 || rec.Header().Get("ETag") != `"0a0b-json"` || !reflect.DeepEqual(f.only(t).ETags, [][]byte{{0x0a, 0x0b}}) {
		t.Errorf("json tag: status %d ETag %q", rec.Code, rec.Header().Get("ETag"))
	}

	// A 2.05 whose tag the client holds is 304 as well; another tag is 200.
	content := &Response{Code: message.Content, ContentFormat: 0, Payload: []byte("on"), ETag: []byte{0x0a, 0x0b}}
	rec = do(t, answer(content), http.MethodGet, "/coap/lamp/x", nil, map[string]string{"If-None-Match": `W/"0a0b"`})
	if rec.Code != 304 || rec.Body.Len() != 0 {
		t.Errorf("2.05 with a held tag: status %d", rec.Code)
	}
	rec = do(t, answer(content), http.MethodGet, "/coap/lamp/x", nil, map[string]string{"If-None-Match": `"0a0c"`})
	if rec.Code != 200 || rec.Body.String() != "on" {
		t.Errorf("2.05 with another tag: status %d", rec.Code)
	}
	// The converted representation is not the one tagged "0a0b".
	rec = do(t, answer(content), http.MethodGet, "/coap/lamp/x", nil, map[string]string{"If-None-Match": `"0a0b"`, "Accept": "application/json"})
	if rec.Code != 200 || rec.Header().Get("ETag") != `"0a0b-json"` {
		t.Errorf("converted 2.05 under the CoAP tag: status %d ETag %q", rec.Code, rec.Header().Get("ETag"))
	}
	// If-None-Match: * on GET: any current representation fails it.
	f = answer(content)
	rec = do(t, f, http.MethodGet, "/coap/lamp/x", nil, map[string]string{"If-None-Match": "*"})
	if rec.Code != 304 || f.only(t).ETags != nil {
		t.Errorf("If-None-Match *: status %d", rec.Code)
	}

	// Preconditions the Request cannot carry are refused, not dropped.
	for _, c := range []struct{ method, header, value string }{
		{http.MethodPut, "If-None-Match", "*"},
		{http.MethodPut, "If-Match", `"0a"`},
		{http.MethodGet, "If-Match", `"0a"`},
	} {
		f := &fakeForwarder{}
		wantTextError(t, do(t, f, c.method, "/coap/lamp/x", nil, map[string]string{c.header: c.value}), http.StatusNotImplemented, c.header)
		if f.count() != 0 {
			t.Errorf("%s with %s reached the forwarder", c.method, c.header)
		}
	}
}

func TestRequestBody(t *testing.T) {
	cases := []struct {
		ctype string
		want  *message.MediaType
	}{
		{"", nil},
		{"application/cbor", mt(message.AppCBOR)},
		{"application/json; charset=utf-8", mt(message.AppJSON)},
		{"text/plain", mt(message.TextPlain)},
		{"text/plain;charset=UTF-8", mt(message.TextPlain)},
		{"application/senml+cbor", mt(message.AppSenMLCBOR)},
		{"Application/Link-Format", mt(message.AppLinkFormat)},
	}
	for _, c := range cases {
		f := &fakeForwarder{}
		rec := do(t, f, http.MethodPut, "/coap/lamp/x", strings.NewReader("21.5"), map[string]string{"Content-Type": c.ctype})
		if rec.Code != 200 {
			t.Fatalf("%q: status %d %s", c.ctype, rec.Code, rec.Body)
		}
		req := f.only(t)
		if string(req.Payload) != "21.5" || !reflect.DeepEqual(req.ContentFormat, c.want) {
			t.Errorf("%q: payload %q format %v, want %v", c.ctype, req.Payload, req.ContentFormat, c.want)
		}
	}
	for _, c := range []struct{ hdr, value, want string }{
		{"Content-Type", "text/html", "text/html has no CoAP Content-Format"},
		{"Content-Type", "text/plain; charset=iso-8859-1", "no CoAP Content-Format"},
		{"Content-Type", "application/coap-payload;cf=60", "coap-payload"},
		{"Content-Type", "not a type", "does not parse"},
		{"Content-Encoding", "gzip", "gzip"},
	} {
		f := &fakeForwarder{}
		wantTextError(t, do(t, f, http.MethodPost, "/coap/lamp/x", strings.NewReader("x"), map[string]string{c.hdr: c.value}), http.StatusUnsupportedMediaType, c.want)
		if f.count() != 0 {
			t.Errorf("%s: %s reached the forwarder", c.hdr, c.value)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	f := &fakeForwarder{}
	h := &Handler{Prefix: "/coap/", F: f, MaxBody: 16}
	// Declared length over the limit: refused before reading.
	body := &countingReader{r: strings.NewReader(strings.Repeat("a", 17))}
	r := httptest.NewRequest(http.MethodPost, "/coap/lamp/x", body)
	r.ContentLength = 17
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	wantTextError(t, rec, http.StatusRequestEntityTooLarge, "larger than 16 bytes")
	if body.n != 0 {
		t.Errorf("read %d bytes of a body declared too large", body.n)
	}
	// Unknown length (chunked), found while reading.
	r = httptest.NewRequest(http.MethodPost, "/coap/lamp/x", io.MultiReader(strings.NewReader(strings.Repeat("a", 17))))
	r.ContentLength = -1
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	wantTextError(t, rec, http.StatusRequestEntityTooLarge, "larger than 16 bytes")
	if f.count() != 0 {
		t.Error("an oversized body reached the forwarder")
	}
	// Exactly the limit passes.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/coap/lamp/x", strings.NewReader(strings.Repeat("a", 16))))
	if rec.Code != 200 || len(f.only(t).Payload) != 16 {
		t.Errorf("16-byte body: status %d", rec.Code)
	}
	// The default limit applies when MaxBody is zero.
	f = &fakeForwarder{}
	rec = do(t, f, http.MethodPut, "/coap/lamp/x", bytes.NewReader(make([]byte, DefaultMaxBody+1)), nil)
	wantTextError(t, rec, http.StatusRequestEntityTooLarge, fmt.Sprint(DefaultMaxBody))
}

func TestForwarderErrors(t *testing.T) {
	cases := []struct {
		err    error
		status int
		want   string
	}{
		{ErrNotAllowed, 403, "no proxy rule allows GET /coap/lamp/x"},
		{fmt.Errorf("rule lookup: %w", ErrNotAllowed), 403, "no proxy rule allows"},
		{fmt.Errorf("%w: lamp", ErrUnknownDevice), 404, `unknown device "lamp"`},
		{errors.New("socket closed"), 502, `the CoAP request to device "lamp" failed`},
		{fmt.Errorf("exchange: %w", context.DeadlineExceeded), 504, "in time"},
		{fmt.Errorf("overloaded: %w", message.ServiceUnavailable), 503, "CoAP server returned 5.03"},
	}
	for _, c := range cases {
		rec := do(t, failing(c.err), http.MethodGet, "/coap/lamp/x", nil, nil)
		wantTextError(t, rec, c.status, c.want)
		if strings.Contains(rec.Body.String(), "socket") {
			t.Errorf("internal error text in the body: %q", rec.Body)
		}
	}
	// A nil response without error is the bridge's fault, not the client's.
	wantTextError(t, do(t, &fakeForwarder{fn: func(context.Context, *Request) (*Response, error) { return nil, nil }},
		http.MethodGet, "/coap/lamp/x", nil, nil), http.StatusBadGateway, "no response")
}

// TestTimeout: a Forwarder that waits for its context gets Handler.Timeout,
// and the client 504, whatever error the Forwarder returns once stopped.
func TestTimeout(t *testing.T) {
	for _, name := range []string{"ctx error", "own error"} {
		f := &fakeForwarder{fn: func(ctx context.Context, _ *Request) (*Response, error) {
			if _, ok := ctx.Deadline(); !ok {
				return nil, errors.New("no deadline")
			}
			<-ctx.Done()
			if name == "own error" {
				return nil, errors.New("exchange abandoned")
			}
			return nil, ctx.Err()
		}}
		h := &Handler{Prefix: "/coap/", F: f, Timeout: 20 * time.Millisecond}
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/coap/lamp/x", nil))
		wantTextError(t, rec, http.StatusGatewayTimeout, "in time")
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: took %v", name, d)
		}
	}
}

// TestClientGone: a client that goes away gets no answer written and the
// Forwarder's context ends.
func TestClientGone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeForwarder{fn: func(fctx context.Context, _ *Request) (*Response, error) {
		cancel()
		<-fctx.Done()
		return nil, fctx.Err()
	}}
	rec := httptest.NewRecorder()
	(&Handler{Prefix: "/coap/", F: f}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/coap/lamp/x", nil).WithContext(ctx))
	if rec.Body.Len() != 0 {
		t.Errorf("wrote %d %q to a gone client", rec.Code, rec.Body)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
