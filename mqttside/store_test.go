package mqttside

import (
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func TestCopyingStore(t *testing.T) {
	s := newCopyingStore()
	s.Open()
	defer s.Close()

	pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pub.TopicName, pub.Qos, pub.MessageID = "a", 1, 1
	s.Put("o.1", pub)
	s.Put("i.2", packets.NewControlPacket(packets.Pubrec))
	pub.Dup = true // the writer touching the original must not reach the store
	got := s.Get("o.1").(*packets.PublishPacket)
	if got == pub || got.Dup || got.TopicName != "a" {
		t.Fatalf("stored packet shared or changed: same=%v dup=%v", got == pub, got.Dup)
	}
	got.Dup = true // resume touching its copy must not reach the store either
	if s.Get("o.1").(*packets.PublishPacket).Dup {
		t.Fatal("Get returned the stored packet itself")
	}

	keys, changed := s.outbound()
	if len(keys) != 1 || !keys["o.1"] {
		t.Fatalf("outbound keys %v, want only o.1", keys)
	}
	select {
	case <-changed:
		t.Fatal("changed before any removal")
	default:
	}
	s.Del("o.1")
	select {
	case <-changed:
	default:
		t.Fatal("removal not signalled")
	}
	if keys, _ := s.outbound(); len(keys) != 0 {
		t.Fatalf("outbound keys after Del: %v", keys)
	}
}

func TestCopyingStoreResumeSignal(t *testing.T) {
	s := newCopyingStore()
	s.Open()
	defer s.Close()
	select {
	case <-s.resumed():
	default:
		t.Fatal("a new store should not make onConnect wait")
	}
	s.expectResume()
	ch := s.resumed()
	select {
	case <-ch:
		t.Fatal("resumed before Paho listed the store")
	default:
	}
	s.All()
	select {
	case <-ch:
	default:
		t.Fatal("listing the store did not signal the resume")
	}
	s.All() // a second listing must not panic on a closed channel
	s.expectResume()
	s.expectResume() // twice without a resume in between
	select {
	case <-s.resumed():
		t.Fatal("resumed without a listing")
	default:
	}
}
