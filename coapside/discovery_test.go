package coapside

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
)

func discoveryMux() *ServeMux {
	mux := NewServeMux()
	ok := HandlerFunc(func(w ResponseWriter, _ *Request) {})
	mux.HandleResource("GET /sensors/temp", ok, linkformat.Resource{
		ResourceTypes: []string{"temperature-c"}, Interfaces: []string{"sensor"},
		ContentFormats: []uint16{0, 50}, Observable: true, Size: 12,
	})
	mux.HandleResource("GET /sensors/hum", ok, linkformat.Resource{ResourceTypes: []string{"humidity"}, Observable: true})
	mux.HandleResource("PUT /actuators/led", ok, linkformat.Resource{ResourceTypes: []string{"light"}, Interfaces: []string{"actuator"}})
	mux.HandleResource("GET /config/{device}", ok, linkformat.Resource{})
	mux.Describe(linkformat.Resource{Path: "/config/dev-1", ResourceTypes: []string{"config"}})
	return mux
}

func targets(links []linkformat.Link) []string {
	var out []string
	for _, l := range links {
		out = append(out, l.Target)
	}
	return out
}

func TestDiscoveryOurServer(t *testing.T) {
	_, addr := startServer(t, discoveryMux(), ServerOptions{EndpointOptions: serverTestOpts()})
	c := newBlockClient(t, ClientBlockwiseOptions{})
	base := fmt.Sprintf("coap://%s", addr)
	tests := []struct {
		query []string
		want  []string
	}{
		{nil, []string{"/sensors/temp", "/sensors/hum", "/actuators/led", "/config/dev-1"}},
		{[]string{"rt=temperature-c"}, []string{"/sensors/temp"}},
		{[]string{"rt=temp*"}, []string{"/sensors/temp"}},
		{[]string{"href=/sensors/*"}, []string{"/sensors/temp", "/sensors/hum"}},
		{[]string{"obs"}, []string{"/sensors/temp", "/sensors/hum"}},
		{[]string{"if=actuator"}, []string{"/actuators/led"}},
		{[]string{"ct=50"}, []string{"/sensors/temp"}},
		{[]string{"rt=none"}, nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.query), func(t *testing.T) {
			links, err := c.Discover(testCtx(t), base, tc.query...)
			if err != nil {
				t.Fatal(err)
			}
			if got := targets(links); !slices.Equal(got, tc.want) {
				t.Errorf("links %v, want %v", got, tc.want)
			}
		})
	}
	links, _ := c.Discover(testCtx(t), base, "rt=temperature-c")
	if len(links) == 1 {
		r, err := linkformat.ResourceFromLink(links[0])
		if err != nil || !r.Observable || r.Size != 12 || !slices.Equal(r.ContentFormats, []uint16{0, 50}) {
			t.Errorf("attributes lost: %+v %v", r, err)
		}
	}
	// A bad filter is refused by the client before sending, and by the
	// server with 4.00 when it arrives.
	if _, err := c.Discover(testCtx(t), base, "=x"); !errors.Is(err, linkformat.ErrBadQuery) {
		t.Errorf("bad query at client: %v", err)
	}
	resp, err := c.Get(testCtx(t), base+"/.well-known/core?=x")
	if err != nil || resp.Code != message.BadRequest {
		t.Errorf("bad query at server: %v %v", resp, err)
	}
}

func TestDiscoveryLargeDocumentAndUndescribe(t *testing.T) {
	mux := NewServeMux()
	for i := range 60 {
		mux.Describe(linkformat.Resource{Path: fmt.Sprintf("/dev/sensor-%02d", i), ResourceTypes: []string{"temperature"}, Observable: true})
	}
	if !mux.Undescribe("/dev/sensor-07") || mux.Undescribe("/nope") {
		t.Fatal("Undescribe result")
	}
	_, addr := startServer(t, mux, ServerOptions{EndpointOptions: serverTestOpts()})
	c := newBlockClient(t, ClientBlockwiseOptions{})
	links, err := c.Discover(testCtx(t), fmt.Sprintf("coap://%s/.well-known/core", addr))
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 59 || slices.Contains(targets(links), "/dev/sensor-07") {
		t.Errorf("%d links (document over one block)", len(links))
	}
}

func TestDiscoveryWrongFormat(t *testing.T) {
	mux := NewServeMux()
	mux.HandleFunc("GET /.well-known/core", func(w ResponseWriter, _ *Request) {
		w.SetContentFormat(message.AppJSON)
		_, _ = w.Write([]byte(`[]`))
	})
	_, addr := startServer(t, mux, ServerOptions{EndpointOptions: serverTestOpts()})
	c := newBlockClient(t, ClientBlockwiseOptions{})
	if _, err := c.Discover(testCtx(t), fmt.Sprintf("coap://%s", addr)); !errors.Is(err, ErrUnexpectedFormat) {
		t.Errorf("err %v", err)
	}
}
