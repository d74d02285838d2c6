package httpcoap

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

// BenchmarkServeHTTP measures the mapping around a Forwarder that answers at
// once: a plain GET, and a GET whose CBOR answer is converted to JSON.
func BenchmarkServeHTTP(b *testing.B) {
	cborMap := []byte{0xa1, 0x64, 't', 'e', 'm', 'p', 0xf9, 0x4d, 0x60}
	for _, c := range []struct{ name, accept string }{{"plain", ""}, {"cbor-to-json", "application/json"}} {
		b.Run(c.name, func(b *testing.B) {
			h := &Handler{Prefix: "/coap/", F: answer(&Response{Code: message.Content, ContentFormat: int(message.AppCBOR), Payload: cborMap, ETag: []byte{1}})}
			r := httptest.NewRequest(http.MethodGet, "/coap/lamp/sensors/temp?unit=c", nil)
			if c.accept != "" {
				r.Header.Set("Accept", c.accept)
			}
			b.ReportAllocs()
			for b.Loop() {
				h.F.(*fakeForwarder).reqs = nil
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code != 200 {
					b.Fatal(rec.Code)
				}
			}
		})
	}
}
