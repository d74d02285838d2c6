package rules

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coap-mqtt/bridge/coapside/message"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.err golden files")

func TestGoodFilesLoad(t *testing.T) {
	s, err := LoadFiles([]string{"testdata/good/*.toml"}, ".")
	if err != nil {
		t.Fatalf("good files do not load:\n%v", err)
	}
	if got := len(s.Devices); got != 4 {
		t.Errorf("devices = %d, want 4", got)
	}
	if d, ok := s.Device("tracker-9"); !ok || d.URL != "" || d.Host != "" {
		t.Errorf("device without url: %+v, %v", d, ok)
	}
	d, ok := s.Device("meter-2")
	if !ok {
		t.Fatal("device meter-2 missing")
	}
	if want := filepath.Join("testdata", "good", "certs", "meter-2.pem"); d.CertFile != want {
		t.Errorf("cert_file = %q, want %q (relative to the rule file)", d.CertFile, want)
	}
	if d.Host != "meter-2.example:5684" || !d.Secure {
		t.Errorf("meter-2 host = %q secure = %v", d.Host, d.Secure)
	}
	var in *Ingress
	for _, r := range s.Ingress {
		if r.Name == "door-events" {
			in = r
		}
	}
	if in == nil || fmt.Sprint(in.ResourceTypes, in.Interfaces) != "[door-event] [core.p]" {
		t.Errorf("ingress door-events rt/if = %+v", in)
	}
	var res *Resource
	for _, r := range s.Resources {
		if r.Name == "door-config" {
			res = r
		}
	}
	if res == nil || fmt.Sprint(res.ResourceTypes, res.Interfaces) != "[config oic.r.door] [core.rp]" {
		t.Errorf("resource door-config rt/if = %+v", res)
	}
	for _, o := range s.Observe {
		if o.Name == "temperatures" && o.CatalogTopic.String() != "catalog/{device}" {
			t.Errorf("observe temperatures catalog_topic = %q", o.CatalogTopic)
		}
	}
}

func TestDesignExample(t *testing.T) {
	s, err := LoadFiles([]string{"testdata/good/design.toml"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Ingress) != 1 || len(s.Observe) != 1 || len(s.Poll) != 1 || len(s.Commands) != 1 || len(s.Resources) != 1 {
		t.Fatalf("rule counts: %d %d %d %d %d", len(s.Ingress), len(s.Observe), len(s.Poll), len(s.Commands), len(s.Resources))
	}
	in := s.Ingress[0]
	if in.Pos.Line != 7 || in.QoS != 1 || len(in.Methods) != 2 || in.Methods[0] != message.POST {
		t.Errorf("ingress = %+v", in)
	}
	c := s.Commands[0]
	if c.Timeout.String() != "10s" || c.QueueTTL != 2*time.Minute || c.Method != message.PUT || c.Filter.Filter() != "cmd/+/#" {
		t.Errorf("command = %+v", c)
	}
	if got := len(s.Watches()); got != 3 {
		t.Errorf("watches = %d, want 3", got)
	}
	subs := s.Subscriptions()
	if len(subs) != 2 || subs[0].Filter != "cmd/+/#" || subs[1].Filter != "config/+" {
		t.Errorf("subscriptions = %+v", subs)
	}
}

// TestBadFiles loads each testdata/bad/*.toml and compares every reported
// message with the golden .err file next to it.
func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := LoadFiles([]string{f}, "")
			if err == nil {
				t.Fatal("loaded without error")
			}
			var es Errors
			if !errors.As(err, &es) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %T is not Errors", err)
			}
			for _, e := range es {
				if e.File != f {
					t.Errorf("entry %q names file %q", e.Error(), e.File)
				}
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".toml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("messages differ\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}
