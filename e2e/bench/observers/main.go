// Command observers registers N observations of a bridge's resource rule
// (GET+Observe on URL+i for i in 0..N-1, or on URL N times with -one) from
// S client sockets, prints how
// many were accepted and how long it took, and holds them for -hold.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coap-mqtt/bridge/coapside"
)

func main() {
	base := flag.String("url", "coap://127.0.0.1:5683/config/", "URL prefix; the index is appended")
	n := flag.Int("n", 1000, "observations")
	sockets := flag.Int("sockets", 10, "client sockets")
	conc := flag.Int("c", 64, "registrations in flight")
	one := flag.Bool("one", false, "observe the URL itself N times instead of URL+i")
	hold := flag.Duration("hold", 5*time.Second, "how long to hold the observations after registering")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	clients := make([]*coapside.Client, *sockets)
	for i := range clients {
		c, err := coapside.NewClient(coapside.ClientOptions{Timeout: 10 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer c.Close()
		clients[i] = c
	}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	idx := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				u := fmt.Sprintf("%s%d", *base, i)
				if *one {
					u = *base
				}
				_, err := clients[i%len(clients)].Observe(ctx, u, func(coapside.Notification) {})
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for i := 0; i < *n; i++ {
		idx <- i
	}
	close(idx)
	wg.Wait()
	fmt.Printf("registered %d failed %d in %.1fs first_error=%v\n", ok.Load(), failed.Load(), time.Since(start).Seconds(), firstErr.Load())
	time.Sleep(*hold)
}
