package mqttside

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
)

// ACL decides who may connect to the embedded broker and which topics
// they may use. It is loaded from an auth file (TOML):
//
//	# Anonymous clients (no user name) are refused unless this table exists.
//	[anonymous]
//	networks  = ["127.0.0.0/8", "::1/128"]  # where they may connect from; empty = anywhere
//	publish   = ["public/#"]
//	subscribe = ["public/#", "$SYS/#"]
//	deny      = []
//
//	[[user]]
//	name      = "greenhouse-1"
//	password  = "$2a$10$..."                 # bcrypt hash, e.g. htpasswd -nbB user pass
//	networks  = []                           # optional, as above
//	publish   = ["sensors/{username}/#"]
//	subscribe = ["cmd/{username}/#"]
//	deny      = ["sensors/{username}/secret/#"]
//
// Patterns are MQTT topic filters; {username} is replaced by the user's
// name. A publish is allowed when a publish pattern matches the topic; a
// subscription when a subscribe pattern covers the whole filter; every
// message delivered is checked again against its topic. Deny patterns win
// over allow patterns. Patterns starting with a wildcard do not reach
// $SYS topics [MQTT-4.7.2-1]; list "$SYS/#" to grant them.
//
// [DefaultACL] (no auth file) lets anonymous clients connect from loopback
// addresses only, with full access.
type ACL struct {
	Anonymous *ACLEntry  `toml:"anonymous"`
	Users     []ACLEntry `toml:"user"`

	byName map[string]*ACLEntry
}

// ACLEntry is the anonymous table or one user.
type ACLEntry struct {
	Name      string      `toml:"name"`
	Password  keys.Secret `toml:"password"` // bcrypt hash
	Networks  []string    `toml:"networks"`
	Publish   []string    `toml:"publish"`
	Subscribe []string    `toml:"subscribe"`
	Deny      []string    `toml:"deny"`

	nets []netip.Prefix
}

// DefaultACL allows anonymous clients from loopback addresses only, to
// every topic including $SYS.
func DefaultACL() *ACL {
	a := &ACL{Anonymous: &ACLEntry{
		Networks:  []string{"127.0.0.0/8", "::1/128"},
		Publish:   []string{"#"},
		Subscribe: []string{"#", "$SYS/#"},
	}}
	if err := a.compile(0, nil); err != nil {
		panic(err) // constant input
	}
	return a
}

// LoadACL reads and checks an auth file. A mistake is reported as
// "path:line: what", the line of its key or of its table.
func LoadACL(path string) (*ACL, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAuthFile, err)
	}
	a, err := ParseACL(b)
	var ae *aclError
	switch {
	case errors.As(err, &ae) && ae.line > 0:
		return nil, fmt.Errorf("%s:%d: %w", path, ae.line, err)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// aclError is a mistake in an auth file, at line (0: unknown).
type aclError struct {
	line int
	msg  string
}

func (e *aclError) Error() string { return "auth file: " + e.msg }
func (e *aclError) Unwrap() error { return ErrAuthFile }

// aclErrorf is an aclError at line.
func aclErrorf(line int, format string, args ...any) error {
	return &aclError{line: line, msg: fmt.Sprintf(format, args...)}
}

// ParseACL parses and checks auth file contents.
func ParseACL(b []byte) (*ACL, error) {
	var a ACL
	if err := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields().Decode(&a); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) && len(sm.Errors) > 0 {
			line, _ := sm.Errors[0].Position()
			return nil, aclErrorf(line, "unknown key %q", strings.Join(sm.Errors[0].Key(), "."))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, aclErrorf(line, "%s", de.Error())
		}
		return nil, fmt.Errorf("%w: %w", ErrAuthFile, err)
	}
	if err := a.compile(tableLines(b)); err != nil {
		return nil, err
	}
	return &a, nil
}

// tableLines finds the line of the [anonymous] table (key "") and of each
// [[user]] table, in order, for error messages.
func tableLines(b []byte) (anonymous int, users []int) {
	for i, line := range strings.Split(string(b), "\n") {
		switch t := strings.TrimSpace(line); {
		case strings.HasPrefix(t, "[[user]]"):
			users = append(users, i+1)
		case strings.HasPrefix(t, "[anonymous]") && anonymous == 0:
			anonymous = i + 1
		}
	}
	return anonymous, users
}

func (a *ACL) compile(anonLine int, userLines []int) error {
	a.byName = make(map[string]*ACLEntry, len(a.Users))
	if a.Anonymous != nil {
		if err := a.Anonymous.compile(anonLine, "anonymous"); err != nil {
			return err
		}
	}
	for i := range a.Users {
		u := &a.Users[i]
		line := 0
		if i < len(userLines) {
			line = userLines[i]
		}
		where := fmt.Sprintf("user %d", i+1)
		switch {
		case u.Name == "":
			return aclErrorf(line, "%s: missing name", where)
		case strings.ContainsAny(u.Name, "+#/\x00"):
			return aclErrorf(line, "%s: name %q may not contain '+', '#', '/' or NUL", where, u.Name)
		case a.byName[u.Name] != nil:
			return aclErrorf(line, "%s: duplicate user %q", where, u.Name)
		}
		// The bcrypt error would quote part of the value: keep it out.
		if _, err := bcrypt.Cost([]byte(u.Password.Reveal())); err != nil {
			return aclErrorf(line, "user %q: password must be a bcrypt hash ($2a$, $2b$ or $2y$)", u.Name)
		}
		if err := u.compile(line, fmt.Sprintf("user %q", u.Name)); err != nil {
			return err
		}
		a.byName[u.Name] = u
	}
	return nil
}

func (e *ACLEntry) compile(line int, where string) error {
	e.nets = e.nets[:0]
	for _, n := range e.Networks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			addr, aerr := netip.ParseAddr(n)
			if aerr != nil {
				return aclErrorf(line, "%s: network %q: %v", where, n, err)
			}
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		e.nets = append(e.nets, p.Masked())
	}
	for _, list := range [][]string{e.Publish, e.Subscribe, e.Deny} {
		for _, pat := range list {
			if err := ValidateFilter(e.expand(pat)); err != nil {
				return aclErrorf(line, "%s: pattern: %v", where, err)
			}
		}
	}
	return nil
}

func (e *ACLEntry) expand(pattern string) string {
	if e.Name == "" {
		return pattern
	}
	return strings.ReplaceAll(pattern, "{username}", e.Name)
}

// fromAllowed reports whether remote ("host:port" or host) is in the
// entry's networks; no networks means anywhere.
func (e *ACLEntry) fromAllowed(remote string) bool {
	if len(e.nets) == 0 {
		return true
	}
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, p := range e.nets {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Authenticate reports whether a client may connect. username "" is an
// anonymous client.
func (a *ACL) Authenticate(username string, password []byte, remote string) bool {
	if username == "" {
		return a.Anonymous != nil && a.Anonymous.fromAllowed(remote)
	}
	u := a.byName[username]
	if u == nil {
		// Without an auth file the default ACL has no users; a client
		// that sends credentials is treated as anonymous.
		if len(a.Users) == 0 && a.Anonymous != nil {
			return a.Anonymous.fromAllowed(remote)
		}
		return false
	}
	if !u.fromAllowed(remote) {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(u.Password.Reveal()), password) == nil
}

// still reports whether a connected client with username, from remote,
// would still be let in: its user (or the anonymous table) exists, with
// the same password hash, and admits its network. password is the hash it
// connected under.
func (a *ACL) still(username string, hash keys.Secret, remote string) bool {
	if username == "" || (a.byName[username] == nil && len(a.Users) == 0) {
		return a.Anonymous != nil && a.Anonymous.fromAllowed(remote)
	}
	u := a.byName[username]
	return u != nil && u.Password.Equal(hash) && u.fromAllowed(remote)
}

// hashOf is the password hash username connects with under a, "" for none.
func (a *ACL) hashOf(username string) keys.Secret {
	if u := a.byName[username]; u != nil {
		return u.Password
	}
	return ""
}

// Allowed reports whether username ("" for anonymous) may publish to a
// topic (write) or subscribe to / receive from a filter or topic.
func (a *ACL) Allowed(username, topicOrFilter string, write bool) bool {
	e := a.byName[username]
	if e == nil {
		if username != "" && len(a.Users) > 0 {
			return false
		}
		e = a.Anonymous
	}
	if e == nil {
		return false
	}
	for _, d := range e.Deny {
		if FilterCovers(e.expand(d), topicOrFilter) {
			return false
		}
	}
	list := e.Subscribe
	if write {
		list = e.Publish
	}
	for _, p := range list {
		if FilterCovers(e.expand(p), topicOrFilter) {
			return true
		}
	}
	return false
}
