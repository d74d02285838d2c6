package linkformat

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/e2e/peer"
)

// TestLibcoapDiscovery fetches libcoap coap-server's /.well-known/core,
// parses it, and checks that our query filter selects the same links as
// libcoap's server-side filtering.
func TestLibcoapDiscovery(t *testing.T) {
	client := peer.Require(t, "coap-client-notls")
	port := strconv.Itoa(peer.StartCoapServer(t).Port)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	get := func(query string) string {
		t.Helper()
		uri := "coap://127.0.0.1:" + port + WellKnownPath
		if query != "" {
			uri += "?" + query
		}
		var out []byte
		var err error
		// The server may need a moment to bind; until then coap-client
		// prints a warning instead of the document.
		for range 20 {
			out, err = exec.CommandContext(ctx, client, "-B", "2", "-m", "get", uri).Output()
			if err == nil && (bytes.HasPrefix(out, []byte("<")) || query != "") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("coap-client %s: %v", uri, err)
		}
		return strings.TrimSpace(string(out))
	}

	full := get("")
	links, err := ParseString(full)
	if err != nil {
		t.Fatalf("parse libcoap discovery %q: %v", full, err)
	}
	var timeLink *Link
	for i := range links {
		if links[i].Target == "/time" {
			timeLink = &links[i]
		}
	}
	if timeLink == nil {
		t.Fatalf("no </time> in %q", full)
	}
	r, err := ResourceFromLink(*timeLink)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Observable || len(r.ResourceTypes) != 1 || r.ResourceTypes[0] != "ticks" ||
		len(r.Interfaces) != 1 || r.Interfaces[0] != "clock" || r.Title != "Internal Clock" ||
		len(r.ContentFormats) != 1 || r.ContentFormats[0] != 0 {
		t.Fatalf("/time resource %+v", r)
	}

	for _, q := range []string{"rt=ticks", "rt=tick*", "href=/time", "href=/ex*", "if=clock", "ct=0", "title=Example*", "rt=nomatch"} {
		t.Run(q, func(t *testing.T) {
			theirs, err := ParseString(get(q))
			if err != nil {
				t.Fatal(err)
			}
			f, err := ParseFilter(q)
			if err != nil {
				t.Fatal(err)
			}
			ours := Select(links, []Filter{f})
			if targets(ours) != targets(theirs) {
				t.Fatalf("ours %s, libcoap %s", targets(ours), targets(theirs))
			}
		})
	}
}

func targets(ls []Link) string {
	var s []string
	for _, l := range ls {
		s = append(s, l.Target)
	}
	return strings.Join(s, " ")
}
