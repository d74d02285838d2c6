package mqttside

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"go.etcd.io/bbolt"
)

// persistenceFile is the bolt database inside EmbeddedOptions.PersistenceDir.
const persistenceFile = "broker.db"

// addPersistence stores sessions, subscriptions, retained and in-flight
// messages in a bolt database in dir, so they survive a restart.
func addPersistence(s *mqtt.Server, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("persistence dir: %w", err)
	}
	err := s.AddHook(new(bolt.Hook), &bolt.Options{
		Path: filepath.Join(dir, persistenceFile),
		// Fail instead of hanging when another process holds the file.
		Options: &bbolt.Options{Timeout: 2 * time.Second},
	})
	if err != nil {
		return fmt.Errorf("persistence %s: %w", filepath.Join(dir, persistenceFile), err)
	}
	return nil
}
