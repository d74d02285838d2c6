package dtls

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestPSKStoreReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "psk.toml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("[[psk]]\nidentity=\"a\"\nkey=\"one\"\n")
	s, err := LoadPSKFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := s.Lookup("a"); !ok || string(k.Bytes()) != "one" {
		t.Fatal("a not loaded")
	}
	write("[[psk]]\nidentity=\"b\"\nkey=\"two\"\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Lookup("a"); ok {
		t.Fatal("a still present after reload")
	}
	if k, ok := s.Lookup("b"); !ok || string(k.Bytes()) != "two" {
		t.Fatal("b not loaded")
	}
	write("[[psk]]\nidentity=\"c\"\nkey=\"hex:nothex\"\n")
	if err := s.Reload(); err == nil {
		t.Fatal("bad file reloaded without error")
	}
	if _, ok := s.Lookup("b"); !ok || s.Len() != 1 {
		t.Fatal("failed reload replaced the table")
	}
	if _, err := LoadPSKFile(filepath.Join(t.TempDir(), "missing.toml")); !errors.Is(err, ErrPSKFile) {
		t.Fatalf("missing file: %v", err)
	}
	if err := NewPSKStore(nil).Reload(); !errors.Is(err, ErrPSKFile) {
		t.Fatalf("Reload of in-memory store: %v", err)
	}
}
