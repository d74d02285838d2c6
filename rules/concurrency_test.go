package rules

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/coap-mqtt/bridge/coapside/message"
)

func TestStatsRecord(t *testing.T) {
	var s Stats
	for _, err := range []error{
		nil,
		fmt.Errorf("{device}: %w", ErrEscape),
		ErrMissingCapture,
		fmt.Errorf("x: %w", ErrConvert),
		ErrContentFormat,
		ErrExpr,
		ErrIdentity,
		ErrNoRoute,
		ErrMethodNotAllowed,
		ErrUnknownDevice,
		errors.New("other"),
	} {
		s.Record(err)
	}
	got := []uint64{s.Escapes.Load(), s.MissingCaptures.Load(), s.Conversions.Load(), s.Expressions.Load(), s.Identity.Load(), s.NoRoute.Load(), s.UnknownDevices.Load(), s.Other.Load()}
	want := []uint64{1, 1, 2, 1, 1, 2, 1, 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counts = %v, want %v", got, want)
	}
}

// TestConcurrentUse matches, renders and evaluates on one Set from several
// goroutines; run with -race.
func TestConcurrentUse(t *testing.T) {
	s := mustLoad(t, `
[[device]]
name = "gh1"
url  = "coap://10.0.0.1"

[[command]]
name   = "generic"
filter = "cmd/{device}/{resource...}"
method = "PUT"
url    = "coap://{device}/{resource...}"

[[ingress]]
name  = "expr"
path  = "/x/{device}"
topic = "x/{device}"
where = "payload > 1"
`)
	var stats Stats
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				r, caps, err := s.MatchPath(message.POST, []string{"x", fmt.Sprintf("d%d", g)}, nil)
				if err != nil {
					errs <- err
					return
				}
				_, keep, err := r.Ingress.Prepare(caps, Message{Payload: Payload{Data: []byte(fmt.Sprint(i)), Format: message.TextPlain, HasFormat: true}, Time: testNow})
				if err != nil || keep != (i > 1) {
					errs <- fmt.Errorf("prepare %d: keep %v err %v", i, keep, err)
					return
				}
				c, caps, ok := s.MatchCommand("cmd/gh1/led", nil)
				if !ok {
					errs <- errors.New("no command")
					return
				}
				_, err = s.Target(c, caps)
				stats.Record(err)
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if stats.Other.Load() != 0 {
		t.Errorf("unexpected errors: %d", stats.Other.Load())
	}
}

func BenchmarkRenderTopic(b *testing.B) {
	p, _ := ParseTopic("greenhouse/{device}/{path...}")
	caps := Captures{{"device", "greenhouse-1"}, {"path", "sensors/temp"}}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var err error
		if buf, err = p.AppendRender(buf[:0], caps); err != nil {
			b.Fatal(err)
		}
	}
}
