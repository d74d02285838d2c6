package mqttside

import (
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// addPersistence is replaced when a storage hook is available.
func addPersistence(_ *mqtt.Server, dir string) error {
	return fmt.Errorf("%w: persistence_dir %q: persistence not available", ErrInvalidOptions, dir)
}
