package httpcoap

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzServeHTTP feeds outside bytes to every parser of the mapping (path,
// query, Accept, If-None-Match, Content-Type): no panic, an HTTP status
// always, and a forwarded Request only with values CoAP can carry.
func FuzzServeHTTP(f *testing.F) {
	f.Add("lamp/a%2Fb/%C3%A9", "x=1&&y", "application/json;q=0.5, application/cbor", `"0a0b", W/"ff", *`, "text/plain; charset=utf-8", true)
	f.Add("lamp/../x", "%zz", "*/*;q=bad", `W/"zz"`, "application/coap-payload;cf=1", false)
	f.Add("/", "", "", "", "", true)
	f.Fuzz(func(t *testing.T, path, query, acc, inm, ctype string, post bool) {
		u, err := url.Parse("/coap/" + path)
		if err != nil {
			return
		}
		u.RawQuery = query
		method := http.MethodGet
		if post {
			method = http.MethodPost
			inm = ""
		}
		r := httptest.NewRequest(method, "/", strings.NewReader("body"))
		r.URL = u
		r.Header.Set("Accept", acc)
		r.Header.Set("If-None-Match", inm)
		r.Header.Set("Content-Type", ctype)
		fw := &fakeForwarder{}
		rec := httptest.NewRecorder()
		(&Handler{Prefix: "/coap/", F: fw}).ServeHTTP(rec, r)
		if rec.Code < 200 || rec.Code > 599 {
			t.Fatalf("status %d", rec.Code)
		}
		if fw.count() == 0 {
			if rec.Code < 400 {
				t.Fatalf("status %d without forwarding", rec.Code)
			}
			return
		}
		req := fw.only(t)
		for _, v := range append([]string{req.Device}, req.Path...) {
			if v == "" || v == "." || v == ".." || !utf8.ValidString(v) || len(v) > maxOptionLen {
				t.Fatalf("forwarded path value %q", v)
			}
		}
		for _, v := range req.Query {
			if v == "" || !utf8.ValidString(v) || len(v) > maxOptionLen {
				t.Fatalf("forwarded query value %q", v)
			}
		}
		for _, e := range req.ETags {
			if len(e) == 0 || len(e) > 8 {
				t.Fatalf("forwarded ETag %x", e)
			}
		}
		if req.Accept != nil && !req.Accept.Known() {
			t.Fatalf("forwarded Accept %v", *req.Accept)
		}
		if req.ContentFormat != nil && !req.ContentFormat.Known() {
			t.Fatalf("forwarded Content-Format %v", *req.ContentFormat)
		}
	})
}
