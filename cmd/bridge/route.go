package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/coap-mqtt/bridge/bridge"
	"github.com/coap-mqtt/bridge/coapside/message"
	"github.com/coap-mqtt/bridge/coapside/uri"
	"github.com/coap-mqtt/bridge/rules"
	"github.com/spf13/cobra"
)

// Exit codes of "bridge route".
const (
	exitRouted    = 0 // the message goes through
	exitNotRouted = 1 // refused, filtered, or no rule takes it
	// exitUsage (2) also covers a config or rule files that do not load.
)

const routeExitHelp = `Exit codes:
  0  routed: published, sent to a device, read from a topic or answered by discovery
  1  not routed: no rule takes it, the rule refuses it, or where drops it
  2  usage error, or config and rule files that do not load (the errors
     bridge check prints, with file:line)`

// routeFlags are the flags of "bridge route coap" and "bridge route mqtt".
type routeFlags struct {
	payload       string
	file          string
	contentFormat string
	identity      string
	json          bool
}

// newRouteCmd builds "bridge route": a dry run of a CoAP request or an MQTT
// publish through the rules that bridge run loads, with nothing sent.
func newRouteCmd(cfgPath *string, stdout, stderr io.Writer) *cobra.Command {
	f := &routeFlags{}
	cmd := &cobra.Command{
		Use:   "route coap|mqtt ARGS",
		Short: "Show which rule takes a CoAP request or MQTT publish, and what it becomes (no network)",
		Long: `A dry run through the rules of the config (--config, as bridge run and bridge
check load them), with no socket opened: the same matching, conversion,
where and transform, and command targeting as the running bridge.

  route coap METHOD PATH   a request to the bridge's CoAP server: the ingress
                           rule, captures, topic, payload after conversion,
                           where and transform, QoS and retain; the topic a
                           resource rule reads; discovery; or the code the
                           client hears and the nearest rules
  route mqtt TOPIC         an MQTT publish: the command rule, device, method,
                           URI, content format and response topic; the
                           resource rules that keep it; or the nearest
                           command rules

` + routeExitHelp,
		Example: `  bridge route coap POST /telemetry/gh-1/temp --payload 21.5 -t text/plain
  bridge route coap GET /config/sim-0
  bridge route mqtt cmd/sim-0/actuators/led --payload on
  bridge route --json coap PUT /telemetry/gh-1/temp -f reading.cbor -t cbor`,
		Args: cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError(stderr, "missing subcommand: coap or mqtt")
			}
			return usageError(stderr, "unknown subcommand %q: want coap or mqtt", args[0])
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError(stderr, "%v", err)
	})
	pf := cmd.PersistentFlags()
	pf.StringVarP(&f.payload, "payload", "p", "", "message payload")
	pf.StringVarP(&f.file, "file", "f", "", `read the payload from a file ("-" for stdin)`)
	pf.BoolVar(&f.json, "json", false, "print the result as JSON")

	coapCmd := &cobra.Command{
		Use:   "coap METHOD PATH",
		Short: "Route a CoAP request to the bridge's server (PATH may be a coap:// URL)",
		Long: `Route a CoAP request to the bridge's server. PATH is /a/b/c or a coap:// URL
(percent-encoded segments are decoded as a client would send them).

` + routeExitHelp,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError(stderr, "want METHOD and PATH, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			return routeCoAP(c, f, *cfgPath, args, stdout, stderr)
		},
	}
	coapCmd.Flags().StringVarP(&f.contentFormat, "content-format", "t", "", "Content-Format of the payload (name or number)")
	coapCmd.Flags().StringVar(&f.identity, "identity", "", "the client's DTLS identity (PSK identity or certificate CN), as on coaps")
	mqttCmd := &cobra.Command{
		Use:   "mqtt TOPIC",
		Short: "Route an MQTT publish through the command and resource rules",
		Long:  "Route an MQTT publish on TOPIC through the command and resource rules.\n\n" + routeExitHelp,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError(stderr, "want exactly one TOPIC, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			return routeMQTT(c, f, *cfgPath, args[0], stdout, stderr)
		},
	}
	cmd.AddCommand(coapCmd, mqttCmd)
	return cmd
}

// loadRouter loads config and rules as bridge check does; problems are
// printed and exit with exitUsage.
func loadRouter(c *cobra.Command, path string, stderr io.Writer) (*bridge.Router, error) {
	cfg, err := loadConfig(path, c.Flags().Changed("config"))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, exitError{exitUsage}
	}
	rt, err := bridge.NewRouter(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, exitError{exitUsage}
	}
	return rt, nil
}

func routeCoAP(c *cobra.Command, f *routeFlags, cfgPath string, args []string, stdout, stderr io.Writer) error {
	method, ok := message.ParseMethod(args[0])
	if !ok {
		return usageError(stderr, "unknown method %q: want GET, POST, PUT, DELETE, FETCH, PATCH or iPATCH", args[0])
	}
	raw := args[1]
	if !strings.Contains(raw, "://") {
		raw = "coap://localhost/" + strings.TrimPrefix(raw, "/")
	}
	_, opts, err := uri.Parse(raw)
	if err != nil {
		return usageError(stderr, "bad path %q: %v", args[1], err)
	}
	cf := -1
	if f.contentFormat != "" {
		mt, err := parseContentFormat(f.contentFormat)
		if err != nil {
			return usageError(stderr, "%v", err)
		}
		cf = int(mt)
	}
	payload, err := readPayload(&coapFlags{payload: f.payload, file: f.file}, c.InOrStdin())
	if err != nil {
		return usageError(stderr, "payload: %v", err)
	}
	rt, err := loadRouter(c, cfgPath, stderr)
	if err != nil {
		return err
	}
	probe := bridge.CoAPProbe{Method: method, Path: opts.Strings(message.URIPath), Payload: payload,
		ContentFormat: cf, Identity: f.identity, Received: time.Now()}
	res := rt.CoAP(probe)
	out := coapJSON(probe, &res)
	if f.json {
		writeJSON(stdout, out)
	} else {
		writeCoAPText(stdout, out)
	}
	if !out.Routed {
		return exitError{exitNotRouted}
	}
	return nil
}

func routeMQTT(c *cobra.Command, f *routeFlags, cfgPath, topic string, stdout, stderr io.Writer) error {
	if topic == "" || strings.ContainsAny(topic, "+#") {
		return usageError(stderr, "bad topic %q: a topic name, without wildcards", topic)
	}
	payload, err := readPayload(&coapFlags{payload: f.payload, file: f.file}, c.InOrStdin())
	if err != nil {
		return usageError(stderr, "payload: %v", err)
	}
	rt, err := loadRouter(c, cfgPath, stderr)
	if err != nil {
		return err
	}
	res := rt.MQTT(topic, payload)
	out := mqttJSON(topic, &res)
	if f.json {
		writeJSON(stdout, out)
	} else {
		writeMQTTText(stdout, out)
	}
	if !out.Routed {
		return exitError{exitNotRouted}
	}
	return nil
}

// ruleRef names a rule and where it is written.
type ruleRef struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Pattern string `json:"pattern"`
	File    string `json:"file"`
	Line    int    `json:"line"`
}

func (r *ruleRef) String() string {
	return fmt.Sprintf("[[%s]] %q %s (%s:%d)", r.Kind, r.Name, r.Pattern, r.File, r.Line)
}

// candidateJSON is a rule that nearly matched.
type candidateJSON struct {
	ruleRef
	Matched    int    `json:"matched_segments"`
	MethodOnly bool   `json:"method_mismatch,omitempty"`
	Reason     string `json:"reason"`
}

func candidates(cs []rules.Candidate) []candidateJSON {
	out := make([]candidateJSON, len(cs))
	for i, c := range cs {
		out[i] = candidateJSON{
			ruleRef:    ruleRef{Kind: string(c.Kind), Name: c.Name, Pattern: c.Pattern.String(), File: c.Pos.File, Line: c.Pos.Line},
			Matched:    c.Matched,
			MethodOnly: c.MethodOnly,
			Reason:     c.Reason,
		}
	}
	return out
}

// payloadJSON holds bytes: UTF-8 text as a string, anything else in base64.
type payloadJSON struct {
	Text   *string `json:"text,omitempty"`
	Base64 string  `json:"base64,omitempty"`
	Bytes  int     `json:"bytes"`
}

func payloadOf(b []byte) payloadJSON {
	p := payloadJSON{Bytes: len(b)}
	if utf8.Valid(b) {
		s := string(b)
		p.Text = &s
	} else {
		p.Base64 = base64.StdEncoding.EncodeToString(b)
	}
	return p
}

// String shows the payload on one line: text quoted when it is not
// printable as it is, other bytes in hex.
func (p payloadJSON) String() string {
	switch {
	case p.Bytes == 0:
		return "(empty)"
	case p.Bytes > shownPayload:
		return fmt.Sprintf("(%d bytes, not shown)", p.Bytes)
	case p.Text != nil && !strings.ContainsFunc(*p.Text, isControl):
		return *p.Text
	case p.Text != nil:
		return fmt.Sprintf("%q", *p.Text)
	}
	b, _ := base64.StdEncoding.DecodeString(p.Base64)
	return "hex " + hex.EncodeToString(b)
}

// shownPayload is the largest payload the text report prints (--json
// always holds it).
const shownPayload = 1024

// exprJSON is an expression with its result.
type exprJSON struct {
	Expr string `json:"expr"`
	// Ran is false when the expression was not reached (an earlier step
	// failed, or where dropped the message before transform).
	Ran    bool `json:"ran"`
	Result any  `json:"result,omitempty"`
}

// publishJSON is the MQTT message an ingress rule publishes.
type publishJSON struct {
	Topic       string      `json:"topic"`
	Payload     payloadJSON `json:"payload"`
	QoS         byte        `json:"qos"`
	Retain      bool        `json:"retain"`
	ContentType string      `json:"content_type,omitempty"`
}

// coapRouteJSON is what "bridge route coap" prints.
type coapRouteJSON struct {
	Routed        bool              `json:"routed"`
	Action        string            `json:"action"`
	Method        string            `json:"method"`
	Path          string            `json:"path"`
	Code          string            `json:"code,omitempty"` // none for a proxy: the device answers
	Rule          *ruleRef          `json:"rule,omitempty"`
	Captures      map[string]string `json:"captures,omitempty"`
	Reason        string            `json:"reason,omitempty"`
	Error         string            `json:"error,omitempty"`
	Candidates    []candidateJSON   `json:"candidates,omitempty"`
	Payload       *payloadJSON      `json:"payload_in,omitempty"`
	ContentFormat *int              `json:"content_format,omitempty"`
	Decoded       any               `json:"decoded,omitempty"`
	Where         *exprJSON         `json:"where,omitempty"`
	Transform     *exprJSON         `json:"transform,omitempty"`
	Publish       *publishJSON      `json:"publish,omitempty"`
	// ReadTopic is the topic a resource rule answers from.
	ReadTopic string `json:"read_topic,omitempty"`
	// ProxyTo is the device resource a proxy rule passes the request to.
	ProxyTo string `json:"proxy_to,omitempty"`
	// Note explains what the run time adds (a resource's 4.04 before a
	// first message, discovery).
	Note string `json:"note,omitempty"`
}

func coapJSON(p bridge.CoAPProbe, r *bridge.CoAPRoute) *coapRouteJSON {
	out := &coapRouteJSON{
		Routed: r.Routed(),
		Action: string(r.Action),
		Method: p.Method.String(),
		Path:   escapedPath(p.Path),
		Code:   r.Code.String(),
		Reason: r.Reason,
	}
	if r.Err != nil {
		out.Error = r.Err.Error()
	}
	if len(r.Captures) > 0 {
		out.Captures = r.Captures.Map()
	}
	out.Candidates = candidates(r.Candidates)
	switch r.Action {
	case bridge.CoAPDiscovery:
		out.Note = "answered by discovery: the link-format list of resource rules holding a value and described ingress rules (RFC 6690)"
	case bridge.CoAPRead:
		out.Note = "answers with the latest message on the topic, 4.04 until one was published there"
	case bridge.CoAPProxy:
		out.Code = ""
		out.ProxyTo = r.Target.URL().String()
		out.Note = "the device answers, or the proxy cache while it holds a fresh response; a device without url is reached where it last spoke from, and not while it sleeps"
	}
	if r.Rule == nil {
		return out
	}
	switch {
	case r.Rule.Proxy != nil:
		px := r.Rule.Proxy
		out.Rule = &ruleRef{Kind: string(rules.KindProxy), Name: px.Name, Pattern: px.Path.String(), File: px.Pos.File, Line: px.Pos.Line}
		return out
	case r.Rule.Ingress != nil:
		in := r.Rule.Ingress
		out.Rule = &ruleRef{Kind: string(rules.KindIngress), Name: in.Name, Pattern: in.Path.String(), File: in.Pos.File, Line: in.Pos.Line}
	default:
		rs := r.Rule.Resource
		out.Rule = &ruleRef{Kind: string(rules.KindResource), Name: rs.Name, Pattern: rs.Path.String(), File: rs.Pos.File, Line: rs.Pos.Line}
		out.ReadTopic = r.Topic
		return out
	}
	if r.Action == bridge.CoAPRefused && r.Reason == "identity" {
		return out
	}
	pl := payloadOf(p.Payload)
	out.Payload = &pl
	if p.ContentFormat >= 0 {
		cf := p.ContentFormat
		out.ContentFormat = &cf
	}
	rule := r.Rule.Ingress
	out.Decoded = r.Trace.Decoded
	if rule.Where != nil {
		out.Where = &exprJSON{Expr: rule.Where.String(), Ran: r.Trace.WhereRan}
		if r.Trace.WhereRan {
			out.Where.Result = r.Trace.Where
		}
	}
	if rule.Transform != nil {
		out.Transform = &exprJSON{Expr: rule.Transform.String(), Ran: r.Trace.TransformRan, Result: r.Trace.Transformed}
	}
	if m := r.Message; m.Topic != "" {
		out.Publish = &publishJSON{Topic: m.Topic, Payload: payloadOf(m.Payload), QoS: m.QoS, Retain: m.Retain, ContentType: m.ContentType}
	}
	return out
}

// mqttRouteJSON is what "bridge route mqtt" prints.
type mqttRouteJSON struct {
	Routed     bool              `json:"routed"`
	Topic      string            `json:"topic"`
	Rule       *ruleRef          `json:"rule,omitempty"`
	Captures   map[string]string `json:"captures,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	Error      string            `json:"error,omitempty"`
	Candidates []candidateJSON   `json:"candidates,omitempty"`
	// Subscribed: a command rule's filter takes the topic, so the bridge
	// receives it at all.
	Subscribed bool `json:"subscribed"`
	// Resources are the resource rules that keep the message.
	Resources []resourceUseJSON `json:"resources,omitempty"`
	// Device is the device the host names, Registered when it is a
	// [[device]]; Learned means its address is where it last spoke
	// from, known only at run time.
	Device     string `json:"device,omitempty"`
	Registered bool   `json:"registered,omitempty"`
	Learned    bool   `json:"learned,omitempty"`
	// Address is host:port to send to ("" when learned).
	Address       string       `json:"address,omitempty"`
	Secure        bool         `json:"secure"`
	Method        string       `json:"method,omitempty"`
	URI           string       `json:"uri,omitempty"`
	ContentFormat *int         `json:"content_format,omitempty"`
	Payload       *payloadJSON `json:"payload,omitempty"`
	Timeout       string       `json:"timeout,omitempty"`
	ResponseTopic string       `json:"response_topic,omitempty"`
	QoS           byte         `json:"response_qos"`
}

// resourceUseJSON is a resource rule keeping an MQTT message.
type resourceUseJSON struct {
	ruleRef
	// Path is the CoAP path that serves the message.
	Path string `json:"path"`
}

func mqttJSON(topic string, r *bridge.MQTTRoute) *mqttRouteJSON {
	out := &mqttRouteJSON{Routed: r.Routed(), Topic: topic, Reason: r.Reason, Subscribed: r.Subscribed, Candidates: candidates(r.Candidates)}
	if r.Err != nil {
		out.Error = r.Err.Error()
	}
	for _, m := range r.Resources {
		u := resourceUseJSON{ruleRef: ruleRef{Kind: string(rules.KindResource), Name: m.Rule.Name, Pattern: m.Rule.Topic.String(), File: m.Rule.Pos.File, Line: m.Rule.Pos.Line}}
		if segs, err := m.Rule.Path.RenderSegments(m.Captures); err == nil {
			u.Path = "/" + strings.Join(segs, "/")
		}
		out.Resources = append(out.Resources, u)
	}
	if r.Rule == nil {
		return out
	}
	c := r.Rule
	out.Rule = &ruleRef{Kind: string(rules.KindCommand), Name: c.Name, Pattern: c.Filter.String(), File: c.Pos.File, Line: c.Pos.Line}
	if len(r.Captures) > 0 {
		out.Captures = r.Captures.Map()
	}
	out.Method, out.Timeout, out.ResponseTopic, out.QoS = c.Method.String(), c.Timeout.String(), r.ResponseTopic, c.QoS
	if r.Request == nil {
		return out
	}
	t := r.Target
	out.Device, out.Registered, out.Learned, out.Address, out.Secure = t.Name, t.Device != nil, t.Learned, t.Host, t.Secure
	out.URI = r.Request.URL.String()
	if cf, ok := r.Request.Options.ContentFormat(); ok {
		n := int(cf)
		out.ContentFormat = &n
	}
	pl := payloadOf(r.Request.Payload)
	out.Payload = &pl
	return out
}

// escapedPath writes Uri-Path values as a URL path, each segment
// percent-encoded, so a segment holding '/' shows as %2F.
func escapedPath(segs []string) string {
	esc := make([]string, len(segs))
	for i, s := range segs {
		esc[i] = url.PathEscape(s)
	}
	return "/" + strings.Join(esc, "/")
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeCoAPText prints a CoAP route for a person, one fact per line.
func writeCoAPText(w io.Writer, r *coapRouteJSON) {
	req := r.Method + " " + r.Path
	switch {
	case r.Routed && r.Rule != nil:
		fmt.Fprintf(w, "%s: routed by %s\n", req, r.Rule)
	case r.Routed:
		fmt.Fprintf(w, "%s: routed to discovery (/.well-known/core)\n", req)
	case r.Rule != nil:
		fmt.Fprintf(w, "%s: not routed: %s takes it but answers %s\n", req, r.Rule, r.Code)
	default:
		fmt.Fprintf(w, "%s: not routed: %s\n", req, r.Code)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	if r.Captures != nil {
		row("captures", capturesText(r.Captures))
	}
	if r.Payload != nil {
		cf := "no Content-Format"
		if r.ContentFormat != nil {
			cf = mediaTypeLabel(message.MediaType(*r.ContentFormat))
		}
		row("payload in", fmt.Sprintf("%s (%s)", r.Payload, cf))
	}
	if r.Decoded != nil {
		row("decoded", jsonText(r.Decoded))
	}
	if r.Where != nil {
		row("where", exprText(r.Where))
	}
	if r.Transform != nil {
		row("transform", exprText(r.Transform))
	}
	if p := r.Publish; p != nil {
		row("topic", p.Topic)
		if r.Action == string(bridge.CoAPPublish) {
			row("payload out", p.Payload.String())
			if p.ContentType != "" {
				row("content type", p.ContentType)
			}
			row("qos, retain", fmt.Sprintf("%d, %t", p.QoS, p.Retain))
		}
	}
	if r.ReadTopic != "" {
		row("reads topic", r.ReadTopic)
	}
	if r.ProxyTo != "" {
		row("proxies to", r.ProxyTo)
	}
	switch r.Action {
	case string(bridge.CoAPFiltered):
		row("outcome", "where is false: nothing is published; the device hears "+r.Code)
	case string(bridge.CoAPPublish):
		row("device hears", r.Code+" once the broker has the message")
	case string(bridge.CoAPRead), string(bridge.CoAPDiscovery):
		row("client hears", r.Code)
	}
	if r.Note != "" {
		row("note", r.Note)
	}
	if r.Error != "" && r.Error != r.Code && len(r.Candidates) == 0 {
		row("error", r.Error)
	}
	if r.Reason != "" {
		row("counted as", fmt.Sprintf("bridge_rule_errors_total{reason=%q}", r.Reason))
	}
	_ = tw.Flush()
	writeCandidates(w, r.Candidates, "ingress, resource and proxy")
}

// writeMQTTText prints a command route for a person.
func writeMQTTText(w io.Writer, r *mqttRouteJSON) {
	switch {
	case r.Routed && r.Rule != nil:
		fmt.Fprintf(w, "%s: routed by %s\n", r.Topic, r.Rule)
	case r.Routed:
		fmt.Fprintf(w, "%s: routed to resource rules (no command rule matches)\n", r.Topic)
	case len(r.Resources) > 0:
		fmt.Fprintf(w, "%s: not routed: the resource rules below would keep it, but not this payload\n", r.Topic)
	case r.Rule != nil:
		fmt.Fprintf(w, "%s: not routed: %s refuses it\n", r.Topic, r.Rule)
	case r.Subscribed:
		fmt.Fprintf(w, "%s: not routed: a command filter delivers it but no command rule matches\n", r.Topic)
	default:
		fmt.Fprintf(w, "%s: not routed: no rule subscribes to it, so the bridge never receives it\n", r.Topic)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	if r.Captures != nil {
		row("captures", capturesText(r.Captures))
	}
	if r.URI != "" {
		switch {
		case r.Learned:
			scheme := "coap"
			if r.Secure {
				scheme = "coaps"
			}
			why := "a [[device]] without url"
			if !r.Registered {
				why = "no [[device]] of that name"
			}
			row("device", fmt.Sprintf("%s (%s): sent over %s to the address it last spoke from, learned at run time; unknown_device if it never spoke", r.Device, why, scheme))
		case r.Device != "":
			row("device", fmt.Sprintf("%s at %s", r.Device, r.Address))
		default:
			row("address", r.Address)
		}
		row("method", r.Method)
		row("uri", r.URI)
		cf := "none"
		if r.ContentFormat != nil {
			cf = mediaTypeLabel(message.MediaType(*r.ContentFormat))
		}
		row("content format", cf)
		row("payload", r.Payload.String())
		row("timeout", r.Timeout)
	}
	if r.Rule != nil {
		rt := "none"
		if r.ResponseTopic != "" {
			rt = fmt.Sprintf("%s (qos %d)", r.ResponseTopic, r.QoS)
		}
		row("response topic", rt)
	}
	for _, u := range r.Resources {
		row("kept by", fmt.Sprintf("%s, served at GET %s", &u.ruleRef, u.Path))
	}
	if r.Error != "" && (r.Rule != nil || len(r.Resources) > 0) {
		row("error", r.Error)
	}
	if r.Reason != "" {
		row("counted as", fmt.Sprintf("bridge_rule_errors_total{reason=%q}", r.Reason))
	}
	_ = tw.Flush()
	writeCandidates(w, r.Candidates, "command")
}

func writeCandidates(w io.Writer, cs []candidateJSON, kind string) {
	if len(cs) == 0 {
		return
	}
	fmt.Fprintf(w, "nearest %s rules:\n", kind)
	for _, c := range cs {
		fmt.Fprintf(w, "  %s\n      %s\n", &c.ruleRef, c.Reason)
	}
}

func capturesText(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, " ")
}

func exprText(e *exprJSON) string {
	if !e.Ran {
		return e.Expr + "  (not evaluated)"
	}
	return e.Expr + "  => " + jsonText(e.Result)
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
