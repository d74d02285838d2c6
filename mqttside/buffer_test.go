package mqttside

import (
	"errors"
	"fmt"
	"testing"
)

func pend(topic string, qos byte) *pending {
	return newPending(Message{Topic: topic, QoS: qos})
}

func drain(b *offlineBuffer) []string {
	var out []string
	for p := b.Pop(); p != nil; p = b.Pop() {
		out = append(out, fmt.Sprintf("%s:%d", p.msg.Topic, p.msg.QoS))
	}
	return out
}

func TestOfflineBuffer(t *testing.T) {
	type step struct {
		topic   string
		qos     byte
		evicted string // topic evicted, "" for none
		err     error
	}
	tests := []struct {
		name  string
		limit int
		steps []step
		want  []string
	}{
		{
			name:  "fifo under limit",
			limit: 3,
			steps: []step{{"a", 1, "", nil}, {"b", 0, "", nil}, {"c", 2, "", nil}},
			want:  []string{"a:1", "b:0", "c:2"},
		},
		{
			name:  "qos0 evicts oldest qos0",
			limit: 3,
			steps: []step{{"q1", 1, "", nil}, {"z1", 0, "", nil}, {"z2", 0, "", nil}, {"z3", 0, "z1", nil}},
			want:  []string{"q1:1", "z2:0", "z3:0"},
		},
		{
			name:  "qos1 evicts oldest qos0",
			limit: 2,
			steps: []step{{"z1", 0, "", nil}, {"q1", 1, "", nil}, {"q2", 1, "z1", nil}},
			want:  []string{"q1:1", "q2:1"},
		},
		{
			name:  "qos1 refused when full of qos1",
			limit: 2,
			steps: []step{{"q1", 1, "", nil}, {"q2", 2, "", nil}, {"q3", 1, "", ErrBufferFull}},
			want:  []string{"q1:1", "q2:2"},
		},
		{
			name:  "qos0 dropped itself when full of qos1",
			limit: 1,
			steps: []step{{"q1", 1, "", nil}, {"z1", 0, "", ErrDropped}},
			want:  []string{"q1:1"},
		},
		{
			name:  "eviction keeps order around the ring",
			limit: 4,
			steps: []step{{"a", 1, "", nil}, {"b", 1, "", nil}, {"c", 0, "", nil}, {"d", 1, "", nil}, {"e", 1, "c", nil}},
			want:  []string{"a:1", "b:1", "d:1", "e:1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newOfflineBuffer(tt.limit)
			for i, s := range tt.steps {
				ev, err := b.Push(pend(s.topic, s.qos))
				if !errors.Is(err, s.err) || (s.err == nil && err != nil) {
					t.Fatalf("step %d: Push err = %v, want %v", i, err, s.err)
				}
				got := ""
				if ev != nil {
					got = ev.msg.Topic
				}
				if got != s.evicted {
					t.Fatalf("step %d: evicted %q, want %q", i, got, s.evicted)
				}
			}
			if got := drain(b); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("contents %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOfflineBufferWrapAndPushFront(t *testing.T) {
	b := newOfflineBuffer(3)
	for round := 0; round < 5; round++ { // move head around the ring
		for i := 0; i < 3; i++ {
			if _, err := b.Push(pend(fmt.Sprint(round, i), byte(i%2))); err != nil {
				t.Fatal(err)
			}
		}
		p := b.Pop()
		if !b.PushFront(p) {
			t.Fatal("PushFront after Pop failed")
		}
		if b.PushFront(pend("x", 1)) {
			t.Fatal("PushFront into a full buffer succeeded")
		}
		want := fmt.Sprint([]string{fmt.Sprint(round, 0) + ":0", fmt.Sprint(round, 1) + ":1", fmt.Sprint(round, 2) + ":0"})
		if got := fmt.Sprint(drain(b)); got != want {
			t.Fatalf("round %d: %s, want %s", round, got, want)
		}
		if b.qos0 != 0 || b.Len() != 0 {
			t.Fatalf("round %d: counters not back to zero: qos0=%d len=%d", round, b.qos0, b.Len())
		}
	}
}

func TestOfflineBufferRemove(t *testing.T) {
	b := newOfflineBuffer(4)
	ps := map[string]*pending{}
	for round := 0; round < 3; round++ { // move head around the ring
		for _, n := range []string{"a", "b", "c", "d"} {
			ps[n] = pend(n, 0)
			if n == "b" || n == "d" {
				ps[n] = pend(n, 1)
			}
			if _, err := b.Push(ps[n]); err != nil {
				t.Fatal(err)
			}
		}
		if !b.Remove(ps["c"]) {
			t.Fatal("Remove of a buffered message failed")
		}
		if b.Remove(ps["c"]) {
			t.Fatal("Remove of a message no longer buffered succeeded")
		}
		if !b.Remove(ps["b"]) {
			t.Fatal("Remove of a buffered message failed")
		}
		if got := fmt.Sprint(drain(b)); got != "[a:0 d:1]" {
			t.Fatalf("round %d: %s, want [a:0 d:1]", round, got)
		}
		if b.qos0 != 0 || b.Len() != 0 {
			t.Fatalf("round %d: counters not back to zero: qos0=%d len=%d", round, b.qos0, b.Len())
		}
		b.Push(pend("x", 0)) // shift the head for the next round
		b.Pop()
	}
}
