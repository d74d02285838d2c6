package mqttside_test

import (
	"context"
	"fmt"
	"time"

	"github.com/coap-mqtt/bridge/mqttside"
)

// The bridge picks the backend from the config, subscribes with manual
// acknowledgement and publishes.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := mqttside.New(mqttside.Options{
		Broker:   mqttside.BrokerEmbedded,
		Embedded: mqttside.EmbeddedOptions{Listen: "127.0.0.1:0"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := c.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close(ctx)

	done := make(chan string, 1)
	err = c.Subscribe(ctx, "cmd/+/led", 1, mqttside.HandlerFunc(func(d *mqttside.Delivery) {
		done <- fmt.Sprintf("%s %s", d.Topic, d.Payload)
		d.Ack() // after the work is done
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := c.Publish(ctx, mqttside.Message{Topic: "cmd/lamp-1/led", Payload: []byte("on"), QoS: 1}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(<-done)
	fmt.Println(c.State())

	err = c.Publish(ctx, mqttside.Message{Topic: "cmd/+/led"})
	fmt.Println(err)
	// Output:
	// cmd/lamp-1/led on
	// connected
	// mqtt: invalid topic name: "cmd/+/led": wildcard '+' not allowed in a topic name [MQTT-4.7.1-1]
}
