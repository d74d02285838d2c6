package bridge

import (
	"fmt"
	"sort"

	"github.com/coap-mqtt/bridge/coapside/dtls"
	"github.com/coap-mqtt/bridge/rules"
)

// loadRules parses files and checks the rules against cfg.
func loadRules(cfg Config, files *rules.Files) (*rules.Set, error) {
	set, err := files.Load()
	if err != nil {
		return nil, err
	}
	if err := checkRules(cfg, set); err != nil {
		return nil, err
	}
	return set, nil
}

// checkRules reports, as rules.Errors with file:line, the rules cfg gives
// no way to fire: ingress and resource rules without a CoAP listener, and
// identity rules without a coaps listener to authenticate clients; and
// coaps devices whose DTLS credentials do not build (a certificate or CA
// file that does not load, a certificate that is not ECDSA, an identity
// too long).
func checkRules(cfg Config, set *rules.Set) error {
	var es rules.Errors
	check := func(kind rules.Kind, name string, pos rules.Pos, identity string) {
		what := fmt.Sprintf("[[%s]] %q", kind, name)
		switch {
		case cfg.CoAP.Listen == "" && cfg.CoAP.DTLS.Listen == "":
			es = append(es, rules.Error{File: pos.File, Line: pos.Line,
				Msg: what + ": coap.listen and coap.dtls.listen are both empty, so no request can reach the rule"})
		case identity != "" && cfg.CoAP.DTLS.Listen == "":
			// Only a coaps client has an identity; plain CoAP gets 4.01.
			es = append(es, rules.Error{File: pos.File, Line: pos.Line,
				Msg: fmt.Sprintf("%s: identity = \"{%s}\" needs coaps clients, but coap.dtls.listen is empty: every request would get 4.01", what, identity)})
		}
	}
	for _, r := range set.Ingress {
		check(rules.KindIngress, r.Name, r.Pos, r.Identity)
	}
	for _, r := range set.Resources {
		check(rules.KindResource, r.Name, r.Pos, r.Identity)
	}
	for _, dev := range set.Devices {
		if !dev.Secure {
			continue
		}
		if _, err := dtls.LoadCredentials(deviceFiles(dev)); err != nil {
			es = append(es, rules.Error{File: dev.Pos.File, Line: dev.Pos.Line, Msg: fmt.Sprintf("[[device]] %q: %v", dev.Name, err)})
		}
	}
	es = append(es, checkClusterRules(cfg, set)...)
	if len(es) == 0 {
		return nil
	}
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].File != es[j].File {
			return es[i].File < es[j].File
		}
		return es[i].Line < es[j].Line
	})
	return es
}
