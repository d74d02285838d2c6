package dtls

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/coap-mqtt/bridge/coapside/dtls/keys"
)

// PSKStore maps PSK identities to keys. Lookups are lock-free; Replace and
// Reload swap the whole table atomically, so a handshake in progress keeps the
// table it started with and new handshakes use the new one.
type PSKStore struct {
	path   string
	table  atomic.Pointer[map[string]Secret]
	loadMu sync.Mutex // serialises Reload
}

// NewPSKStore returns a store holding a copy of entries.
func NewPSKStore(entries map[string]Secret) *PSKStore {
	s := &PSKStore{}
	s.Replace(entries)
	return s
}

// LoadPSKFile reads a psk_file (see keys.ParsePSKFile) and returns a store that
// Reload re-reads from the same path.
func LoadPSKFile(path string) (*PSKStore, error) {
	s := &PSKStore{path: path}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload re-reads the file the store was loaded from. On any error the store
// keeps its current table and the error is returned.
func (s *PSKStore) Reload() error {
	if s.path == "" {
		return fmt.Errorf("%w: store was not loaded from a file", ErrPSKFile)
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPSKFile, err)
	}
	m, err := keys.ParsePSKFile(s.path, data)
	if err != nil {
		return err
	}
	s.table.Store(&m)
	return nil
}

// Replace swaps in a copy of entries.
func (s *PSKStore) Replace(entries map[string]Secret) {
	m := make(map[string]Secret, len(entries))
	for k, v := range entries {
		m[k] = v
	}
	s.table.Store(&m)
}

// Lookup returns the key for identity.
func (s *PSKStore) Lookup(identity string) (Secret, bool) {
	if s == nil {
		return "", false
	}
	m := s.table.Load()
	if m == nil {
		return "", false
	}
	k, ok := (*m)[identity]
	return k, ok
}

// Len returns the number of identities in the store.
func (s *PSKStore) Len() int {
	if s == nil {
		return 0
	}
	m := s.table.Load()
	if m == nil {
		return 0
	}
	return len(*m)
}
