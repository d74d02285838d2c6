package coapside

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/coap-mqtt/bridge/coapside/linkformat"
	"github.com/coap-mqtt/bridge/coapside/message"
)

// discovery is the list of resources a ServeMux describes on
// /.well-known/core (RFC 6690 §4).
type discovery struct {
	mu        sync.RWMutex
	resources []linkformat.Resource
	served    bool // the well-known handler has been registered
}

// HandleResource registers h for pattern like Handle and lists res on
// /.well-known/core. An empty res.Path takes the pattern's path; a pattern
// with wildcards needs an explicit Path (or Describe per concrete resource),
// otherwise the route is not listed.
func (m *ServeMux) HandleResource(pattern string, h Handler, res linkformat.Resource) {
	m.Handle(pattern, h)
	if res.Path == "" {
		path := pattern
		if _, rest, ok := strings.Cut(pattern, " "); ok {
			path = strings.TrimLeft(rest, " ")
		}
		if strings.ContainsAny(path, "{}") {
			m.ensureWellKnown()
			return
		}
		res.Path = path
	}
	m.Describe(res)
}

// Describe lists resources on /.well-known/core, replacing earlier entries
// with the same Path. It registers the discovery handler on first use unless
// the application registered its own for that path. Use it for resources
// behind wildcard patterns, known only at run time.
func (m *ServeMux) Describe(res ...linkformat.Resource) {
	d := &m.disc
	d.mu.Lock()
	for _, r := range res {
		i := slices.IndexFunc(d.resources, func(x linkformat.Resource) bool { return x.Path == r.Path })
		if i >= 0 {
			d.resources[i] = r
		} else {
			d.resources = append(d.resources, r)
		}
	}
	d.mu.Unlock()
	m.ensureWellKnown()
}

// Undescribe removes the resource with path from the discovery document and
// reports whether it was listed.
func (m *ServeMux) Undescribe(path string) bool {
	d := &m.disc
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.resources)
	d.resources = slices.DeleteFunc(d.resources, func(x linkformat.Resource) bool { return x.Path == path })
	return len(d.resources) != n
}

// Resources returns a copy of the described resources in registration order.
func (m *ServeMux) Resources() []linkformat.Resource {
	d := &m.disc
	d.mu.RLock()
	defer d.mu.RUnlock()
	return slices.Clone(d.resources)
}

// ensureWellKnown registers the discovery handler once.
func (m *ServeMux) ensureWellKnown() {
	d := &m.disc
	d.mu.Lock()
	if d.served {
		d.mu.Unlock()
		return
	}
	d.served = true
	d.mu.Unlock()
	// An application's own handler for the path wins (the conflict is ignored).
	_ = m.handle("GET "+linkformat.WellKnownPath, HandlerFunc(m.serveWellKnown))
}

// serveWellKnown answers GET /.well-known/core in link-format with the
// described resources, filtered by the request's queries (RFC 6690 §4.1).
func (m *ServeMux) serveWellKnown(w ResponseWriter, r *Request) {
	WriteWellKnownCore(w, r, m.Resources())
}

// WriteWellKnownCore answers a discovery request (GET /.well-known/core,
// RFC 6690 §4) with resources in link-format, keeping those that match
// every query filter of the request (§4.1); a malformed filter is answered
// 4.00, an Accept other than link-format 4.06. ServeMux uses it for the resources it describes; a handler that
// routes requests itself uses it to list its own.
func WriteWellKnownCore(w ResponseWriter, r *Request, resources []linkformat.Resource) {
	if want, ok := r.Options.Accept(); ok && uint16(want) != linkformat.ContentFormat {
		// RFC 7252 §5.10.4: link-format is the one format served here.
		Error(w, fmt.Errorf("%w: accept %v: /.well-known/core is served in link-format (40)", message.NotAcceptable, want))
		return
	}
	body, err := linkformat.WellKnownCore(resources, r.Queries())
	if err != nil {
		if errors.Is(err, linkformat.ErrBadQuery) {
			Error(w, fmt.Errorf("%w: %w", message.BadRequest, err))
			return
		}
		Error(w, err)
		return
	}
	w.SetContentFormat(message.MediaType(linkformat.ContentFormat))
	_, _ = w.Write(body)
}

// Discover asks the server at url for its resources (GET /.well-known/core,
// RFC 6690 §4) with the given filter queries such as "rt=temperature" or
// "href=/sensors/*". The queries are sent to the server and applied again to
// the answer, since servers may ignore them; presence filters such as "obs"
// are only applied locally. A url without a path means
// /.well-known/core; a long answer is fetched block-wise.
func (c *Client) Discover(ctx context.Context, url string, query ...string) ([]linkformat.Link, error) {
	req, err := NewRequest(message.GET, url, nil)
	if err != nil {
		return nil, err
	}
	return c.DiscoverRequest(ctx, req, query...)
}

// DiscoverRequest is Discover with the request built by the caller: a GET
// whose Uri-Host and Uri-Port options (and Peer, when already resolved)
// name the server. Uri-Path /.well-known/core is added when it has none,
// and the name=value queries as Uri-Query.
func (c *Client) DiscoverRequest(ctx context.Context, req *Request, query ...string) ([]linkformat.Link, error) {
	filters, err := linkformat.ParseFilters(query)
	if err != nil {
		return nil, err
	}
	if !req.Options.Has(message.URIPath) {
		req.Options = req.Options.SetPath(linkformat.WellKnownPath)
	}
	for _, q := range query {
		// RFC 6690 §4.1 defines name=value filters only; a presence filter
		// ("obs") is applied locally, as servers answer it with nothing.
		if strings.Contains(q, "=") {
			req.Options = req.Options.AddString(message.URIQuery, q)
		}
	}
	resp, err := c.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	url := target(req, resp.Peer)
	if resp.Code != message.Content {
		return nil, fmt.Errorf("coap discover %s: %w", url, resp.Code)
	}
	if cf, ok := resp.Options.ContentFormat(); ok && uint16(cf) != linkformat.ContentFormat {
		return nil, fmt.Errorf("coap discover %s: %w: Content-Format %d, want %d", url, ErrUnexpectedFormat, cf, linkformat.ContentFormat)
	}
	links, err := linkformat.Parse(resp.Payload)
	if err != nil {
		return nil, fmt.Errorf("coap discover %s: %w", url, err)
	}
	return linkformat.Select(links, filters), nil
}
