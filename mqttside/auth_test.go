package mqttside

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func hash(t testing.TB, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestParseACLErrors(t *testing.T) {
	h := hash(t, "pw")
	tests := []struct {
		name, file, want string
		line             int // of the mistake, as LoadACL reports it
	}{
		{"toml syntax", "[[user]\n", "toml", 1},
		{"unknown key", "[[user]]\nname=\"a\"\npassword=\"" + h + "\"\npublsh=[\"a\"]\n", "publsh", 4},
		{"missing name", "[[user]]\npassword=\"" + h + "\"\n", "missing name", 1},
		{"wildcard in name", "[[user]]\nname=\"a/#\"\npassword=\"" + h + "\"\n", "may not contain", 1},
		{"duplicate", "[[user]]\nname=\"a\"\npassword=\"" + h + "\"\n\n[[user]]\nname=\"a\"\npassword=\"" + h + "\"\n", "duplicate", 5},
		{"plain password", "# users\n[[user]]\nname=\"a\"\npassword=\"secret\"\n", "bcrypt", 2},
		{"bad pattern", "[[user]]\nname=\"a\"\npassword=\"" + h + "\"\npublish=[\"a/#/b\"]\n", "pattern", 1},
		{"bad network", "\n[anonymous]\nnetworks=[\"10.0.0.0/99\"]\n", "network", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseACL([]byte(tt.file))
			if !errors.Is(err, ErrAuthFile) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseACL = %v, want ErrAuthFile mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret") && tt.name == "plain password" {
				t.Fatal("password text in error")
			}
			path := filepath.Join(t.TempDir(), "auth.toml")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = LoadACL(path)
			if want := fmt.Sprintf("%s:%d: auth file: ", path, tt.line); err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("LoadACL = %v, want it to start with %q", err, want)
			}
		})
	}
}

func TestACLDecisions(t *testing.T) {
	file := fmt.Sprintf(`
[anonymous]
networks  = ["192.0.2.0/24", "2001:db8::1"]
publish   = ["public/#"]
subscribe = ["public/#", "$SYS/broker/+"]

[[user]]
name      = "dev1"
password  = %q
networks  = ["10.0.0.0/8"]
publish   = ["sensors/{username}/#"]
subscribe = ["cmd/{username}/+", "shared/#"]
deny      = ["shared/secret/#"]
`, hash(t, "pw1"))
	acl, err := ParseACL([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	auth := []struct {
		user, pw, remote string
		want             bool
	}{
		{"", "", "192.0.2.9:1000", true},
		{"", "", "[2001:db8::1]:1", true},
		{"", "", "[2001:db8::2]:1", false},
		{"", "", "127.0.0.1:1", false}, // a file replaces the loopback default
		{"dev1", "pw1", "10.1.2.3:5", true},
		{"dev1", "pw1", "192.0.2.9:5", false}, // outside the user's networks
		{"dev1", "pw2", "10.1.2.3:5", false},
		{"nobody", "pw1", "10.1.2.3:5", false},
	}
	for _, a := range auth {
		if got := acl.Authenticate(a.user, []byte(a.pw), a.remote); got != a.want {
			t.Errorf("Authenticate(%q, %q, %s) = %v, want %v", a.user, a.pw, a.remote, got, a.want)
		}
	}
	allowed := []struct {
		user, topic string
		write, want bool
	}{
		{"dev1", "sensors/dev1/temp", true, true},
		{"dev1", "sensors/dev2/temp", true, false},
		{"dev1", "sensors/dev1/temp", false, false}, // publish-only pattern
		{"dev1", "cmd/dev1/led", false, true},
		{"dev1", "cmd/dev1/+", false, true},
		{"dev1", "cmd/dev1/#", false, false}, // wider than cmd/dev1/+
		{"dev1", "cmd/+/led", false, false},
		{"dev1", "shared/a", false, true},
		{"dev1", "shared/#", false, true}, // allowed; deliveries of shared/secret/* are checked per topic
		{"dev1", "shared/secret/x", false, false},
		{"dev1", "shared/secret/#", false, false},
		{"", "public/x", true, true},
		{"", "private/x", true, false},
		{"", "$SYS/broker/uptime", false, true},
		{"", "#", false, false},
		{"stranger", "public/x", true, false}, // unknown users get nothing when users exist
	}
	for _, a := range allowed {
		if got := acl.Allowed(a.user, a.topic, a.write); got != a.want {
			t.Errorf("Allowed(%q, %q, write=%v) = %v, want %v", a.user, a.topic, a.write, got, a.want)
		}
	}
	noAnon, err := ParseACL([]byte(fmt.Sprintf("[[user]]\nname=\"u\"\npassword=%q\n", hash(t, "x"))))
	if err != nil {
		t.Fatal(err)
	}
	if noAnon.Authenticate("", nil, "127.0.0.1:1") || noAnon.Allowed("", "a", true) {
		t.Error("anonymous allowed without an [anonymous] table")
	}
}

// FuzzParseACL checks that any auth file either parses into an ACL whose
// decisions do not panic, or fails with ErrAuthFile.
func FuzzParseACL(f *testing.F) {
	f.Add([]byte("[anonymous]\nnetworks=[\"127.0.0.0/8\"]\npublish=[\"#\"]\n"))
	f.Add([]byte("[[user]]\nname=\"a\"\npassword=\"$2a$04$abcdefghijklmnopqrstuu5Zc0c5LwTZ1ajZTlrwBsKHFaX9Y/Iy2\"\npublish=[\"x/{username}/#\"]\n"))
	f.Add([]byte("[[user]]\nname=\"\"\n"))
	f.Add([]byte("garbage = [[[["))
	f.Fuzz(func(t *testing.T, b []byte) {
		acl, err := ParseACL(b)
		if err != nil {
			if !errors.Is(err, ErrAuthFile) {
				t.Fatalf("error %v does not wrap ErrAuthFile", err)
			}
			return
		}
		for _, u := range append([]string{""}, namesOf(acl)...) {
			acl.Allowed(u, "a/b", true)
			acl.Allowed(u, "#", false)
			acl.Authenticate(u, []byte("pw"), "127.0.0.1:1")
		}
	})
}

func namesOf(a *ACL) []string {
	var out []string
	for _, u := range a.Users {
		out = append(out, u.Name)
	}
	return out
}
